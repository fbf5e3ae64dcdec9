"""Batches of N words x M takes for angular prototypical training, shardable across DDP ranks."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["ClassBalancedSampler"]

log = logging.getLogger(__name__)


class ClassBalancedSampler(Sampler[list[int]]):
    """Yields batches (lists of dataset indices) of `words_per_batch` distinct words x `takes_per_word` takes.

    A batch lists its words one after another: indices [w0 t0, w0 t1, ..., w1 t0, ...], so
    `batch.view(N, M, ...)` groups the takes of a word. One epoch covers every clip once: each word's clips
    are shuffled and cut into groups of M; a word's last, short group is filled by drawing from the word's
    other clips (with replacement). Words with fewer than M clips are SKIPPED (logged once). Batches draw N
    distinct words with probability proportional to the groups they have left, so no word is left over in a
    lump at the end; groups that cannot fill a batch of N distinct words are dropped. The batch list depends
    only on (seed, epoch): every rank builds the same list and takes every `num_replicas`-th batch of it,
    truncated to a multiple of `num_replicas`, so ranks get disjoint batches and equally many of them.
    """

    def __init__(
        self,
        labels: Sequence[int],
        words_per_batch: int,
        takes_per_word: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if takes_per_word < 2:
            raise ValueError(
                f"takes_per_word must be >= 2 (angular prototypical needs it), got {takes_per_word}"
            )
        if words_per_batch < 1:
            raise ValueError(f"words_per_batch must be >= 1, got {words_per_batch}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        by_word: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_word[int(label)].append(index)
        self.skipped_words = sorted(w for w, items in by_word.items() if len(items) < takes_per_word)
        if self.skipped_words:
            log.warning(
                "ClassBalancedSampler: skipping %d word(s) with fewer than %d clips: %s",
                len(self.skipped_words),
                takes_per_word,
                self.skipped_words[:20],
            )
        self.indices_by_word = {
            w: items for w, items in sorted(by_word.items()) if len(items) >= takes_per_word
        }
        if len(self.indices_by_word) < words_per_batch:
            raise ValueError(
                f"ClassBalancedSampler: {len(self.indices_by_word)} word(s) have >= {takes_per_word} clips, "
                f"fewer than words_per_batch={words_per_batch}"
            )
        self.words_per_batch = words_per_batch
        self.takes_per_word = takes_per_word
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _groups(self, rng: np.random.Generator) -> dict[int, list[list[int]]]:
        groups: dict[int, list[list[int]]] = {}
        m = self.takes_per_word
        for word, items in self.indices_by_word.items():
            order = rng.permutation(np.asarray(items)).tolist()
            chunks = [order[i : i + m] for i in range(0, len(order), m)]
            last = chunks[-1]
            if len(last) < m:
                others = [i for i in items if i not in last]
                last.extend(int(i) for i in rng.choice(others, size=m - len(last), replace=True))
            groups[word] = chunks
        return groups

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of an epoch, for all ranks (the same on every rank)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        groups = self._groups(rng)
        words = np.array(sorted(groups))
        remaining = np.array([len(groups[w]) for w in words], dtype=np.float64)
        taken = np.zeros(len(words), dtype=np.int64)
        batches: list[list[int]] = []
        while np.count_nonzero(remaining) >= self.words_per_batch:
            chosen = rng.choice(
                len(words), size=self.words_per_batch, replace=False, p=remaining / remaining.sum()
            )
            batch: list[int] = []
            for position in chosen:
                batch.extend(groups[int(words[position])][taken[position]])
                taken[position] += 1
                remaining[position] -= 1
            batches.append(batch)
        usable = len(batches) - len(batches) % self.num_replicas
        self._cache = (epoch, batches[:usable])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return len(self.epoch_batches()) // self.num_replicas
