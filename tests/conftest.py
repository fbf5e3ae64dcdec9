"""Shared fixtures: the real speech data directory and a few real clips from it."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    configured = os.environ.get("KWS_DATA_DIR")
    candidate = Path(configured) if configured else REPO.parent / "shared" / "data"
    return candidate if (candidate / "manifest.csv").is_file() else None


@pytest.fixture(scope="session")
def kws_data_dir() -> Path:
    found = data_dir()
    if found is None:
        pytest.skip("real speech data not found (set KWS_DATA_DIR or place ../shared/data)")
    return found


@pytest.fixture(scope="session")
def real_clips(kws_data_dir: Path) -> list[Path]:
    """A handful of real clips from the training corpora at 16 kHz and 8 kHz (never gsc_v2_test)."""
    wanted = {"gsc_v1_words": 3, "arabic_sc": 2, "dspspeech20": 2, "fsdd": 2}
    picked: list[Path] = []
    with open(kws_data_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if wanted.get(row["dataset"], 0) > 0:
                wanted[row["dataset"]] -= 1
                picked.append(kws_data_dir / row["path"])
    return picked


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test cache root (KWS_CACHE_DIR) for tests that build clip, feature or target caches."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KWS_CACHE_DIR", str(cache))
    return cache


@contextmanager
def installed_mock_factory(**options: Any) -> Iterator[Any]:
    """gpiozero's MockFactory(**options) as the pin factory; the previous factory is put back after."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory(**options)
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    """Mock GPIO pins for one test (tests drive them with drive_low / drive_high)."""
    with installed_mock_factory() as factory:
        yield factory


@pytest.fixture
def mock_pwm_pins() -> Iterator[Any]:
    """Mock PWM-capable pins for one test (PWMLED)."""
    from gpiozero.pins.mock import MockPWMPin

    with installed_mock_factory(pin_class=MockPWMPin) as factory:
        yield factory
