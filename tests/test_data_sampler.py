"""ClassBalancedSampler: N words x M takes, epoch coverage, determinism, disjoint DDP shards."""

from __future__ import annotations

import logging

import pytest

from training.data.sampler import ClassBalancedSampler

# 12 words with 3 to 40 clips each, plus word 99 with a single clip (too few for M = 2).
LABELS = [word for word in range(12) for _ in range(3 + 3 * word)] + [99]


def test_batches_are_n_distinct_words_by_m_takes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sampler = ClassBalancedSampler(LABELS, words_per_batch=4, takes_per_word=3, seed=0)
    assert sampler.skipped_words == [99] and "skipping 1 word" in caplog.text
    batches = list(sampler)
    assert len(batches) == len(sampler) > 5
    for batch in batches:
        assert len(batch) == 12
        words = [LABELS[i] for i in batch]
        groups = [words[k : k + 3] for k in range(0, 12, 3)]
        assert all(len(set(group)) == 1 for group in groups)  # word-major: N groups of M takes
        assert len({group[0] for group in groups}) == 4  # N distinct words
        assert 99 not in words
    covered = {i for batch in batches for i in batch}
    assert len(covered) > 0.7 * (len(LABELS) - 1)


def test_deterministic_by_seed_and_epoch() -> None:
    first = list(ClassBalancedSampler(LABELS, 4, 2, seed=7))
    assert first == list(ClassBalancedSampler(LABELS, 4, 2, seed=7))
    assert first != list(ClassBalancedSampler(LABELS, 4, 2, seed=8))
    sampler = ClassBalancedSampler(LABELS, 4, 2, seed=7)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_two_ranks_get_disjoint_batches_of_equal_count() -> None:
    ranks = [ClassBalancedSampler(LABELS, 3, 2, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shard0, shard1 = (list(sampler) for sampler in ranks)
        assert len(shard0) == len(shard1) > 0
        assert not {tuple(b) for b in shard0} & {tuple(b) for b in shard1}
        all_batches = ClassBalancedSampler(LABELS, 3, 2, seed=1, num_replicas=2).epoch_batches(epoch)
        assert sorted(shard0 + shard1) == sorted(all_batches)
        # Within an epoch a clip is drawn at most once except to fill a word's last short group.
        flat = [i for batch in shard0 + shard1 for i in batch]
        assert len(flat) - len(set(flat)) <= 12


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="takes_per_word must be >= 2"):
        ClassBalancedSampler(LABELS, 4, 1)
    with pytest.raises(ValueError, match="fewer than words_per_batch"):
        ClassBalancedSampler(LABELS, 13, 2)
    with pytest.raises(ValueError, match="rank"):
        ClassBalancedSampler(LABELS, 4, 2, num_replicas=2, rank=2)
