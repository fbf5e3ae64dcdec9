"""Issue 13's training parts: a frame-sequence second teacher (targets at the student's frame rate, shifts
followed), rooms/noise copies of the student's input from the rooms corpus's train rows only, and AM-softmax
with shuffled batches; each end to end through a tiny training run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
import torch

from tests.test_distill_copies import ProjectionTeacher
from tests.test_train_run import read_log, tiny_overrides
from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.config import ConfigError, load_config
from training.data.dataset import WindowDataset
from training.data.room_augment import RoomAugmentConfig, RoomAugmenter, load_room_augmenter, shift_audio
from training.data.room_copies import build_room_copies
from training.data.rooms import SOUND_COLUMNS
from training.distill import teachers
from training.distill.frames import FrameSequenceTerm, FrameTargetTeacher, pool_target_frames, shift_frames
from training.prepare import select_clips
from training.train import train


class SlopeFrames:
    """A stand-in frame teacher for 1 s windows: 50 frames of 8-d features from fixed projections of 20 ms
    slices, so that a shifted input gives shifted frames."""

    name = "slope-frames"
    sha256 = "ef" * 32
    licence = "MIT"
    sample_rate = 16000
    window_samples = 16000
    frame_dim = 8
    frames_per_window = 50
    embedding_dim = 32

    def __init__(self, model_path: Any = None) -> None:
        self.matrix = np.random.default_rng(3).standard_normal((320, 8)).astype(np.float32)

    def frames(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        windows = np.asarray(audio, np.float32).reshape(-1, 50, 320)
        return np.abs(windows @ self.matrix) + 0.1

    def embed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return teachers.pool_frames(self.frames(audio))


def test_frame_targets_are_paired_normalised_and_follow_shifts() -> None:
    base = SlopeFrames()
    teacher = FrameTargetTeacher(base, frames=25, pool=2)
    audio = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32) * 0.1
    rows = teacher.embed(audio)
    assert rows.shape == (3, 25 * 8) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    expected = base.frames(audio)[:, :50].reshape(3, 25, 2, 8).mean(axis=2)
    got = rows.reshape(3, 25, 8)
    cosine = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert np.allclose(cosine, 1.0, atol=1e-5)
    sequence = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(2, 1, 1)
    moved = shift_frames(sequence, torch.tensor([8, -4]))  # 8 MFCC frames = 2 student frames later
    assert moved[0, :, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert moved[1, :, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    pooled = pool_target_frames(torch.rand(2, 9, 4))
    assert pooled.shape == (2, 16) and torch.allclose(pooled.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="needs 60 teacher frames"):
        FrameTargetTeacher(base, frames=30, pool=2)


def test_frame_term_is_small_for_a_matching_head_and_large_for_its_opposite() -> None:
    term = FrameSequenceTerm(student_channels=4, frame_dim=4, mean_frame=torch.tensor([1.0, 0, 0, 0]))
    with torch.no_grad():
        term.head.weight.copy_(torch.eye(4).unsqueeze(2))
        term.head.bias.zero_()
    frames = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # two target frames, centred
    rows = (frames + torch.tensor([1.0, 0, 0, 0])).reshape(1, -1)
    student = frames.T.unsqueeze(0)  # [1, channels, 2]
    # stored frames are normalised before the common frame is removed: cosine 0.92 for the matching head
    with torch.no_grad():
        assert 0.0 <= float(term(student, rows)) < 0.1
        assert float(term(-student, rows)) > 1.9


def write_tiny_rooms(root: Path) -> Path:
    """A rooms corpus with two training impulse responses, a training noise bed, and rows training must skip
    (an eval IR) or refuse (a reserved music source marked train)."""
    rng = np.random.default_rng(5)
    rows = []
    sounds = {
        "ir/a.flac": ("ir_real", "test", "train", np.r_[1.0, np.zeros(99), 0.3 * rng.standard_normal(800)]),
        "ir/b.flac": ("ir_simulated", "generated", "train", np.r_[1.0, 0.2 * rng.standard_normal(1500)]),
        "ir/eval.flac": ("ir_real", "test", "eval", np.r_[1.0, np.ones(2000)]),
        "noise/hum.flac": ("noise", "gsc_noise", "train", 0.2 * rng.standard_normal(32000)),
    }
    for relative, (kind, source, split, audio) in sounds.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, np.clip(audio, -1, 1).astype(np.float32), 16000, subtype="PCM_16")
        rows.append([relative, kind, source, "test", split, f"{len(audio) / 16000:.4f}", "16000", ""])
    with open(root / "sounds.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SOUND_COLUMNS)
        writer.writerows(rows)
    return root


def test_room_augmenter_reads_train_rows_only_and_refuses_reserved_music(tmp_path: Path) -> None:
    root = write_tiny_rooms(tmp_path / "rooms")
    augmenter = load_room_augmenter(root, RoomAugmentConfig(music_share=0.0))
    assert len(augmenter.impulse_responses) == 2 and len(augmenter.noises) == 1  # the eval IR is not read
    audio = np.zeros(16000, np.float32)
    audio[7000:9000] = 0.5 * np.sin(np.arange(2000) / 5.0)
    out, shift = augmenter(audio, np.random.default_rng(1))
    again, same_shift = augmenter(audio, np.random.default_rng(1))
    assert np.array_equal(out, again) and shift == same_shift and out.shape == audio.shape
    assert np.array_equal(shift_audio(audio, 100)[100:], audio[:-100])
    with open(root / "sounds.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(
            ["noise/hum.flac", "music", "asc-music", "GPL", "train", "2.0", "16000", ""]
        )
    with pytest.raises(ValueError, match="reserved for evaluation"):
        load_room_augmenter(root, RoomAugmentConfig())
    with pytest.raises(ValueError, match="no impulse response"):
        RoomAugmenter(RoomAugmentConfig(), [], [np.ones(10, np.float32)], [])


def test_room_copies_are_cached_and_reproducible(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    clips = select_clips(
        load_config(None, [*tiny_overrides(kws_data_dir, tmp_path, "c"), "data.max_clips=8"]).data
    )
    windows = WindowDataset(clips, 1.0, progress=False)
    augmenter = load_room_augmenter(write_tiny_rooms(tmp_path / "rooms"), RoomAugmentConfig(shift_p=1.0))
    first = build_room_copies(windows, augmenter, copies=2, seed=0, jobs=2, progress=False)
    again = build_room_copies(windows, augmenter, copies=2, seed=0, jobs=1, progress=False)
    assert first.directory == again.directory and first.features.shape[:2] == (2, 8)
    assert np.array_equal(first.features, again.features) and np.any(first.shifts != 0)
    other = build_room_copies(windows, augmenter, copies=2, seed=1, jobs=1, progress=False)
    assert other.directory != first.directory and not np.array_equal(other.features, first.features)


def test_training_with_both_teachers_rooms_and_amsoftmax(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(teachers.TEACHERS, "projection", ProjectionTeacher)
    monkeypatch.setitem(teachers.TEACHERS, "slope-frames", SlopeFrames)
    rooms = write_tiny_rooms(tmp_path / "rooms")
    common = [
        *tiny_overrides(kws_data_dir, tmp_path / "runs", "both"),
        "model.params.blocks=[[16, 2], [24, 2]]",  # 98 MFCC frames -> 25, as edge_tcn's 148 -> 37
        "distill.weight=1",
        "distill.teacher='projection'",
        f"distill.cache_dir='{tmp_path / 'teacher'}'",
        "distill.second_teacher='slope-frames'",
        "distill.second_weight=0.5",
        "train.sampler='shuffle'",
        "train.epochs=1",
        "data.shift_frames=8",
        "data.room_copies=1",
        "data.room_share=0.5",
        f"data.rooms='{rooms}'",
        "data.room_params={music_share = 0.0}",
        "loss.name='amsoftmax'",
        "loss.weight=0.1",
    ]
    result = train(load_config(None, common))
    row = read_log(result.run_dir / "log.csv")[-1]
    assert float(row["second"]) > 0 and float(row["distill"]) > 0 and float(row["loss"]) > 0
    frames_cache = tmp_path / "teacher" / "frames25x2" / SlopeFrames.sha256
    assert len(list(frames_cache.glob("shard-*.keys.json"))) >= 1  # 100 ms student frames: 25 per second
    pooled = train(load_config(None, [*common, "run.name='pooled'", "distill.second_kind='pooled'"]))
    assert float(read_log(pooled.run_dir / "log.csv")[-1]["second"]) > 0
    with pytest.raises(ConfigError, match="N x M batches"):
        load_config(None, [*common, "loss.name='angleproto'"])
    with pytest.raises(ConfigError, match="second_teacher"):
        load_config(None, [*common, "distill.second_teacher=''"])


def test_targets_command_builds_both_caches_without_training(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from training.cli import main

    monkeypatch.setitem(teachers.TEACHERS, "projection", ProjectionTeacher)
    monkeypatch.setitem(teachers.TEACHERS, "slope-frames", SlopeFrames)
    overrides = [
        *tiny_overrides(kws_data_dir, tmp_path / "runs", "t"),
        "model.params.blocks=[[16, 2], [24, 2]]",
        "loss.weight=0",
        "distill.weight=1",
        "distill.teacher='projection'",
        f"distill.cache_dir='{tmp_path / 'teacher'}'",
        "distill.second_teacher='slope-frames'",
        "distill.second_weight=1",
    ]
    assert main(["targets", *[arg for o in overrides for arg in ("--set", o)]]) == 0
    printed = capsys.readouterr().out
    assert "first teacher: 120 targets" in printed and "second teacher: 120 targets" in printed
    assert not (tmp_path / "runs" / "t").exists()  # nothing trained


def test_source_ablations_share_steps_and_change_one_thing() -> None:
    from training.ablations_sources import SOURCE_ABLATIONS, source_ablation_config

    configs = {a.name: source_ablation_config(a, Path("runs/x"), 3, 50) for a in SOURCE_ABLATIONS}
    base = configs["base"].to_dict()
    for name, config in configs.items():
        assert config.train.epochs == 3 and config.train.max_steps_per_epoch == 50
        changed = {
            (section, key) for section, values in config.to_dict().items() for key, value in values.items()
            if value != base[section][key] and section != "run"
        }  # fmt: skip
        sections = {section for section, _ in changed}
        assert (name == "base") == (not changed) and len(sections) <= 1, (name, changed)
