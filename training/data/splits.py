"""Speaker-disjoint train/validation splits that keep every word in both parts where the speakers allow."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from training.data.manifest import Clip

__all__ = ["speaker_split"]

log = logging.getLogger(__name__)


def speaker_split(
    clips: Sequence[Clip], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """Split clips by speaker: no speaker has clips on both sides; deterministic for a given seed.

    First, for every label spoken by two or more speakers, the smallest of its speakers (random among equals)
    goes to validation unless the label is already there. Then, per dataset, random speakers move to
    validation while that brings the dataset's validation share nearer `val_fraction`. A speaker never moves
    when that would leave one of its labels without a training speaker.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"speaker_split: val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0 or not clips:
        return list(clips), []
    rng = np.random.default_rng(seed)
    clips_by_speaker: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        clips_by_speaker[clip.speaker].append(clip)
    speakers = sorted(clips_by_speaker)
    order = {speaker: i for i, speaker in enumerate(rng.permutation(speakers).tolist())}
    labels_of = {s: {c.label for c in clips_by_speaker[s]} for s in speakers}
    dataset_of = {s: clips_by_speaker[s][0].dataset for s in speakers}
    train_speakers_of_label: Counter[str] = Counter()
    for speaker in speakers:
        train_speakers_of_label.update(labels_of[speaker])
    val: set[str] = set()
    val_labels: set[str] = set()

    def movable(speaker: str) -> bool:
        return speaker not in val and all(train_speakers_of_label[label] > 1 for label in labels_of[speaker])

    def move(speaker: str) -> None:
        val.add(speaker)
        val_labels.update(labels_of[speaker])
        train_speakers_of_label.subtract(labels_of[speaker])

    speakers_of_label: dict[str, list[str]] = defaultdict(list)
    for speaker in speakers:
        for label in labels_of[speaker]:
            speakers_of_label[label].append(speaker)
    for label in sorted(speakers_of_label, key=lambda name: (len(speakers_of_label[name]), name)):
        if label in val_labels:
            continue
        candidates = [s for s in speakers_of_label[label] if movable(s)]
        if candidates:
            move(min(candidates, key=lambda s: (len(clips_by_speaker[s]), order[s])))

    datasets = sorted({clip.dataset for clip in clips})
    for dataset in datasets:
        total = sum(1 for clip in clips if clip.dataset == dataset)
        target = val_fraction * total
        in_val = sum(1 for s in val for clip in clips_by_speaker[s] if clip.dataset == dataset)
        own = sorted((s for s in speakers if dataset_of[s] == dataset), key=order.__getitem__)
        for speaker in own:
            size = len(clips_by_speaker[speaker])
            if movable(speaker) and abs(in_val + size - target) < abs(in_val - target):
                move(speaker)
                in_val += size
    train = [clip for clip in clips if clip.speaker not in val]
    validation = [clip for clip in clips if clip.speaker in val]
    missing = sorted({c.label for c in clips} - {c.label for c in validation})
    if missing:
        log.info(
            "speaker_split: %d label(s) have no validation clip (too few speakers): %s", len(missing), missing
        )
    return train, validation
