"""The shuffled batches of distillation-only runs: full coverage, determinism, disjoint DDP shards."""

from __future__ import annotations

import pytest

from training.models import build_model
from training.train import ShuffledBatches, _freeze


def test_every_clip_at_most_once_and_deterministic() -> None:
    sampler = ShuffledBatches(size=103, batch_size=10, seed=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10 and all(len(b) == 10 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 100 and all(0 <= i < 103 for i in flat)
    assert list(ShuffledBatches(size=103, batch_size=10, seed=4)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_ranks_get_disjoint_equal_shards() -> None:
    shards = [list(ShuffledBatches(103, 10, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    seen = [{i for b in shard for i in b} for shard in shards]
    assert not seen[0] & seen[1]


def test_freeze_fixes_named_layers_and_rejects_unknown_ones() -> None:
    model = build_model("res15")
    frozen = _freeze(model, ("stem", "convs.0", "norms.0"))
    assert [name for name, p in model.named_parameters() if not p.requires_grad] == [
        "stem.weight",
        "convs.0.weight",
    ]
    assert len(frozen) == 3
    with pytest.raises(ValueError, match="no layer 'stemm'"):
        _freeze(model, ("stemm",))
