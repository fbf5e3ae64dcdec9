"""Acoustic conditions of the benchmark (training/evaluation/conditions.py) on real clips: deterministic
corruption, 10 dB SNR, reverberation, clean enrollment, and embedding caches keyed per condition."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from training.evaluation.cli import main
from training.evaluation.condition_scoring import (
    EnrolledCleanScorer,
    cached_embeddings,
    code_fingerprint,
    embedding_cache_path,
)
from training.evaluation.conditions import (
    EVAL_NOISE_DIR,
    ConditionConfig,
    active_rms,
    condition_fingerprint,
    condition_windows,
    corrupt_clip,
    room_bank,
)
from training.evaluation.embedders import EmbeddingScorer, PreparedEmbeddings


@pytest.fixture(scope="module")
def noise_config(kws_data_dir: Path) -> ConditionConfig:
    """A real noise recording that loads fast (the benchmark's own noise is asc-music, 17 minutes of MP3)."""
    return ConditionConfig(
        noise_paths=(str(kws_data_dir / "gsc_noise" / "running_tap.flac"),), room_bank_size=3
    )


@pytest.fixture(scope="module")
def clips(real_clips: list[Path]) -> list[np.ndarray]:
    return [load_audio(path) for path in real_clips[:4]]


def test_noise_is_deterministic_per_clip_and_window(
    clips: list[np.ndarray], noise_config: ConditionConfig, isolated_cache: Path
) -> None:
    clip = clips[0][:16000]
    first = corrupt_clip(clip, "a/key", "noise10", 24000, noise_config)
    assert np.array_equal(first, corrupt_clip(clip, "a/key", "noise10", 24000, noise_config))
    assert not np.allclose(first, corrupt_clip(clip, "another/key", "noise10", 24000, noise_config))
    # A 1 s window is the middle of the 1.5 s one: every model hears the same noise around the clip.
    offset = (24000 - 16000) // 2
    assert np.array_equal(
        corrupt_clip(clip, "a/key", "noise10", 16000, noise_config), first[offset : offset + 16000]
    )
    reseeded = ConditionConfig(noise_paths=noise_config.noise_paths, seed=1)
    assert not np.allclose(first, corrupt_clip(clip, "a/key", "noise10", 24000, reseeded))


def test_snr_is_10_db_over_the_active_speech(
    clips: list[np.ndarray], noise_config: ConditionConfig, isolated_cache: Path
) -> None:
    for i, clip in enumerate(clips):
        clip = clip[:16000]
        n = clip.shape[0]
        window = corrupt_clip(clip, f"clip{i}", "noise10", 24000, noise_config)
        offset = (24000 - n) // 2
        noise = window[offset : offset + n] - clip
        snr = 20 * np.log10(active_rms(clip) / np.sqrt(np.mean(np.square(noise.astype(np.float64)))))
        assert snr == pytest.approx(10.0, abs=0.05)
        # The noise fills the whole window, the padding included.
        assert np.sqrt(np.mean(np.square(window[:offset]))) > 0.1 * np.sqrt(np.mean(np.square(noise)))


def test_active_rms_ignores_silence() -> None:
    tone = 0.1 * np.sin(np.linspace(0, 800 * np.pi, 8000)).astype(np.float32)
    padded = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(8000, np.float32)])
    assert active_rms(padded) == pytest.approx(active_rms(tone), rel=0.02)
    assert active_rms(padded) == pytest.approx(0.1 / np.sqrt(2), rel=0.02)


def test_reverb_changes_the_audio_and_keeps_its_level(
    clips: list[np.ndarray], noise_config: ConditionConfig, isolated_cache: Path
) -> None:
    rooms = room_bank(noise_config)
    assert len(rooms) == 3 and all(room.shape[0] > 1000 for room in rooms)
    assert list((isolated_cache / "eval" / "rooms").glob("rooms-*.npz"))  # simulated once, then read
    assert all(np.array_equal(a, b) for a, b in zip(rooms, room_bank(noise_config), strict=True))
    clip = clips[1][:16000]
    wet = corrupt_clip(clip, "k", "reverb", 24000, noise_config, rooms)
    assert np.array_equal(wet, corrupt_clip(clip, "k", "reverb", 24000, noise_config, rooms))
    offset = (24000 - clip.shape[0]) // 2
    dry = np.zeros(24000, np.float32)
    dry[offset : offset + clip.shape[0]] = clip
    correlation = float(np.dot(dry, wet) / (np.linalg.norm(dry) * np.linalg.norm(wet)))
    assert correlation < 0.95
    assert active_rms(wet) == pytest.approx(active_rms(clip), rel=0.1)


def test_condition_keys_differ(noise_config: ConditionConfig, tmp_path: Path) -> None:
    prints = {name: condition_fingerprint(name, noise_config) for name in ("clean", "noise10", "reverb")}
    assert len(set(prints.values())) == 3
    assert (
        condition_fingerprint("noise10", ConditionConfig(noise_paths=noise_config.noise_paths, snr_db=5.0))
        != (prints["noise10"])
    )
    paths = {embedding_cache_path(tmp_path, "ab" * 32, 24000, p, ["k1", "k2"]) for p in prints.values()}
    assert len(paths) == 3
    assert code_fingerprint("0" * 64) != code_fingerprint("1" * 64)
    with pytest.raises(ValueError, match="noise10"):
        condition_fingerprint("noise5", noise_config)


@dataclass
class CountingEmbedder:
    """Log-energy in 8 bands: a real (if weak) embedding, counting its calls."""

    name: str = "bands"
    window_seconds: float = 1.5
    calls: int = 0

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.calls += 1
        spectrum = np.abs(np.fft.rfft(audio, axis=1)) ** 2
        return np.log(
            np.stack([band.sum(axis=1) for band in np.array_split(spectrum, 8, axis=1)], axis=1) + 1e-9
        )


def test_embeddings_are_cached_per_condition(
    real_clips: list[Path], noise_config: ConditionConfig, isolated_cache: Path
) -> None:
    embedder = CountingEmbedder()
    scorer = EmbeddingScorer(embedder, batch_size=64, progress=False)
    paths, keys = real_clips[:5], [f"k{i}" for i in range(5)]
    arguments = (noise_config, "model-sha", None, False)
    clean = cached_embeddings(scorer, paths, keys, "clean", *arguments)
    noisy = cached_embeddings(scorer, paths, keys, "noise10", *arguments)
    assert embedder.calls == 2
    assert not np.allclose(clean, noisy)
    assert np.array_equal(noisy, cached_embeddings(scorer, paths, keys, "noise10", *arguments))
    assert embedder.calls == 2  # read back, not embedded again
    assert len(list((isolated_cache / "eval" / "embeddings").rglob("*.npy"))) == 2
    windows = condition_windows(paths, keys, 1.5, "noise10", noise_config, progress=False)
    assert np.allclose(noisy, scorer.embed_all(windows), atol=1e-6)


def test_enrollment_stays_clean() -> None:
    clean = np.eye(4, dtype=np.float32)
    corrupted = np.roll(clean, 1, axis=1)
    scorer = EnrolledCleanScorer(PreparedEmbeddings(np.concatenate([clean, corrupted])), 4)
    scores = scorer.scores([np.array([0]), np.array([1])])
    assert scores.shape == (4, 2)
    # Templates are the clean items 0 and 1; the rows are the corrupted items.
    assert scores[3, 0] == pytest.approx(1.0) and scores[0, 1] == pytest.approx(1.0)


def test_cli_scores_conditions_side_by_side(kws_data_dir: Path, tmp_path: Path, isolated_cache: Path) -> None:
    out = tmp_path / "dtw"
    noise = kws_data_dir / "gsc_noise" / "running_tap.flac"
    code = main(
        ["--baseline", "mfcc-dtw", "--data-dir", str(kws_data_dir), "--max-clips-per-word", "3", "--shots", "1",
         "--seeds", "0", "--condition", "clean", "noise10", "--eval-noise", str(noise), "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    table = (out / "conditions.md").read_text()
    assert "| clean | 1 |" in table and "| noise10 | 1 |" in table
    noisy = json.loads((out / "noise10" / "results.json").read_text())
    assert noisy["condition"] == "noise10"
    assert noisy["condition_setup"]["enrollment"] == "clean"
    assert noisy["condition_setup"]["noise_paths"] == [str(noise)]
    clean = json.loads((out / "clean" / "results.json").read_text())
    assert noisy["shots"]["1"]["mean"]["eer"] != clean["shots"]["1"]["mean"]["eer"]


def test_help_lists_the_condition_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--condition", "--corrupt-enrollment", "--eval-noise", "--no-cache", "--teacher"):
        assert option in text


def test_default_noise_is_reserved_and_documented() -> None:
    if not EVAL_NOISE_DIR.is_dir():
        pytest.skip("the Debian package asc-music is not installed (make setup installs it)")
    assert sorted(p.name for p in EVAL_NOISE_DIR.glob("*.mp3")) == [
        "frontiers.mp3",
        "machine_wars.mp3",
        "time_to_strike.mp3",
    ]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    assert "asc-music" in docs
