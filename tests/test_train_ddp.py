"""DistributedDataParallel on CPU: two gloo processes train a few steps and end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_train_run import tiny_overrides
from tests.train_fixtures import one_torch_thread  # noqa: F401


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, data_dir: str, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    import torch.distributed as dist

    from training.config import load_config
    from training.train import train

    overrides = [
        *tiny_overrides(Path(data_dir), Path(out), "ddp"),
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "run.device='cpu'",
    ]
    result = train(load_config(None, overrides))
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_processes_hold_identical_weights(
    kws_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KWS_CACHE_DIR", str(tmp_path / "cache"))
    # fork: the children inherit the imported modules instead of importing torch again (much faster here).
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(kws_data_dir), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # They trained: the weights moved away from the shared initialisation.
    torch.manual_seed(0)
    from training.models import build_model

    fresh = build_model("edge_tcn", {"stem_channels": 16, "blocks": [[16, 1], [24, 2]], "embedding_dim": 32})
    assert not torch.equal(fresh.state_dict()["embedding.weight"], rank0["embedding.weight"])
    assert (tmp_path / "ddp" / "last.pt").is_file()
