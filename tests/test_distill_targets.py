"""Cached teacher targets: misses, hits, resume after an interruption, the key index and lookup order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from training.distill.targets import TeacherTargets, augmented_key, base_key, window_items

WINDOW = 320


class SpectrumTeacher:
    """A small deterministic teacher: the normalised magnitude spectrum of the window. Counts its calls."""

    name = "spectrum"
    sha256 = "ab" * 32
    licence = "Apache-2.0"
    sample_rate = 16000
    window_samples = WINDOW
    embedding_dim = 161

    def __init__(self) -> None:
        self.windows_embedded = 0

    def embed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.windows_embedded += len(audio)
        spectrum = np.abs(np.fft.rfft(np.asarray(audio, np.float64), axis=1))
        return (spectrum / np.linalg.norm(spectrum, axis=1, keepdims=True)).astype(np.float32)


def make_items(count: int, seed: int = 0) -> list[tuple[str, npt.NDArray[np.float32]]]:
    rng = np.random.default_rng(seed)
    return [
        (f"corpus/clip{i:03d}.flac", rng.standard_normal(WINDOW).astype(np.float32)) for i in range(count)
    ]


def test_miss_then_hit(tmp_path: Path) -> None:
    teacher, items = SpectrumTeacher(), make_items(25)
    built = TeacherTargets.build(teacher, items, tmp_path, shard_size=8, batch_size=4, progress=False)
    assert (built.computed, built.hits, len(built)) == (25, 0, 25)
    assert teacher.windows_embedded == 25
    again = TeacherTargets.build(teacher, items, tmp_path, progress=False)
    assert (again.computed, again.hits) == (0, 25)
    assert teacher.windows_embedded == 25
    expected = teacher.embed(np.stack([audio for _, audio in items]))
    np.testing.assert_allclose(again.lookup([key for key, _ in items]).numpy(), expected, atol=2e-3)


def test_key_index_on_disk(tmp_path: Path) -> None:
    teacher, items = SpectrumTeacher(), make_items(10)
    TeacherTargets.build(teacher, items, tmp_path, shard_size=4, batch_size=4, progress=False)
    directory = tmp_path / teacher.sha256
    meta = json.loads((directory / "teacher.json").read_text())
    assert meta["name"] == "spectrum" and meta["embedding_dim"] == 161
    listed = [
        key for path in sorted(directory.glob("shard-*.keys.json")) for key in json.loads(path.read_text())
    ]
    assert listed == [key for key, _ in items]
    for path in directory.glob("shard-*.npy"):
        assert np.load(path).dtype == np.float16
    reopened = TeacherTargets.open(teacher.sha256, tmp_path)
    assert reopened.keys() == listed


def test_resume_after_interruption(tmp_path: Path) -> None:
    teacher, items = SpectrumTeacher(), make_items(30)

    def interrupted() -> object:
        for index, item in enumerate(items):
            if index == 17:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        TeacherTargets.build(teacher, interrupted(), tmp_path, shard_size=8, batch_size=4, progress=False)
    partial = TeacherTargets.open(teacher.sha256, tmp_path)
    assert len(partial) == 17  # complete shards and the flushed remainder are kept

    resumed_teacher = SpectrumTeacher()
    resumed = TeacherTargets.build(resumed_teacher, items, tmp_path, shard_size=8, progress=False)
    assert (resumed.hits, resumed.computed, resumed_teacher.windows_embedded) == (17, 13, 13)
    np.testing.assert_allclose(
        resumed.lookup([key for key, _ in items]).numpy(),
        teacher.embed(np.stack([audio for _, audio in items])),
        atol=2e-3,
    )


def test_lazy_sources_are_only_loaded_on_a_miss(tmp_path: Path) -> None:
    teacher, items = SpectrumTeacher(), make_items(6)
    TeacherTargets.build(teacher, items[:4], tmp_path, progress=False)
    loaded: list[str] = []

    def loader(key: str, audio: npt.NDArray[np.float32]):  # type: ignore[no-untyped-def]
        return lambda: loaded.append(key) or audio

    TeacherTargets.build(
        teacher, [(key, loader(key, audio)) for key, audio in items], tmp_path, progress=False
    )
    assert loaded == [items[4][0], items[5][0]]


def test_lookup_order_duplicates_and_missing(tmp_path: Path) -> None:
    teacher, items = SpectrumTeacher(), make_items(12)
    targets = TeacherTargets.build(teacher, items + items[:3], tmp_path, shard_size=5, progress=False)
    assert targets.computed == 12
    order = [items[7][0], items[0][0], items[11][0], items[7][0]]
    looked_up = targets.lookup(order)
    assert isinstance(looked_up, torch.Tensor) and looked_up.dtype == torch.float32
    assert looked_up.shape == (4, 161)
    expected = teacher.embed(np.stack([items[7][1], items[0][1], items[11][1], items[7][1]]))
    np.testing.assert_allclose(looked_up.numpy(), expected, atol=2e-3)
    torch.testing.assert_close(torch.linalg.norm(looked_up, dim=1), torch.ones(4))
    with pytest.raises(KeyError, match=r"'nowhere/clip\.flac'"):
        targets.lookup([items[0][0], "nowhere/clip.flac"])


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    teacher = SpectrumTeacher()
    with pytest.raises(ValueError, match=r"audio of 'a/b'.*\[N, 320\]"):
        TeacherTargets.build(teacher, [("a/b", np.zeros(100, np.float32))], tmp_path, progress=False)
    with pytest.raises(ValueError, match="non-empty strings"):
        TeacherTargets.build(teacher, [("", np.zeros(WINDOW, np.float32))], tmp_path, progress=False)
    other = SpectrumTeacher()
    other.embedding_dim = 7
    with pytest.raises(ValueError, match="embedding_dim is 161"):
        TeacherTargets.build(other, [], tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"teacher\.json"):
        TeacherTargets.open("cd" * 32, tmp_path)


def test_augmented_copies_are_reproducible(tmp_path: Path) -> None:
    items = make_items(3)

    def gain(audio: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
        return audio * np.float32(rng.uniform(0.1, 1.0)) + np.float32(rng.uniform(-0.5, 0.5))

    loaders = [(key, (lambda audio=audio: audio)) for key, audio in items]
    first = [(key, source()) for key, source in window_items(loaders, copies=2, augment=gain, seed=5)]
    second = [(key, source()) for key, source in window_items(loaders, copies=2, augment=gain, seed=5)]
    assert [key for key, _ in first] == [
        key for clip, _ in items for key in (clip, augmented_key(clip, 0), augmented_key(clip, 1))
    ]
    for (_, a), (_, b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[1][1], first[2][1])
    assert base_key(augmented_key("x/y.flac", 3)) == "x/y.flac"
    targets = TeacherTargets.build(SpectrumTeacher(), first, tmp_path, progress=False)
    assert len(targets) == 9
    with pytest.raises(ValueError, match="needs an augment"):
        list(window_items(loaders, copies=1))


def test_parallel_build_fills_the_cache_from_several_processes(tmp_path: Path) -> None:
    items = make_items(30)
    built = TeacherTargets.build_parallel(
        SpectrumTeacher(), items, tmp_path, jobs=3, progress=False, load_teacher=SpectrumTeacher
    )
    # The parent computed nothing: every key came from the three workers' shards.
    assert (built.computed, built.hits, len(built)) == (0, 30, 30)
    shards = sorted((tmp_path / SpectrumTeacher.sha256).glob("shard-*.keys.json"))
    assert len({path.name.rsplit("-", 1)[-1] for path in shards}) == 3  # one writer pid per part
    expected = SpectrumTeacher().embed(np.stack([audio for _, audio in items]))
    np.testing.assert_allclose(built.lookup([key for key, _ in items]).numpy(), expected, atol=2e-3)
    again = TeacherTargets.build_parallel(
        SpectrumTeacher(), items, tmp_path, jobs=3, progress=False, load_teacher=SpectrumTeacher
    )
    assert (again.computed, again.hits) == (0, 30)


def test_parallel_build_reports_a_failed_part(tmp_path: Path) -> None:
    class Broken(SpectrumTeacher):
        def embed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            raise RuntimeError("teacher crashed")

    with pytest.raises(RuntimeError, match="failed"):
        TeacherTargets.build_parallel(
            Broken(), make_items(10), tmp_path, jobs=2, progress=False, load_teacher=Broken
        )
