"""Shared by the trainer's tests: one torch thread while a test runs (the CI machine's cores are shared,
and two threads fighting over a busy core make tiny models many times slower)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
