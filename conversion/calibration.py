"""The calibration set for int8 quantization: committed 1.5 s windows of the training corpora, with a manifest.

`python -m conversion.calibration` regenerates `calibration_data/` (deterministic by seed) from the training
splits of the word corpora (never `gsc_v2_test`, never a clip whose word is one of the ten command words, in
any language) and from the `gsc_noise` recordings: ordinary speech of many words and voices, quiet and loud
takes, silence and noise. `load_calibration_set` reads it back with checks; `calibration_inputs` turns it into
encoder inputs for a given model (window, `edge.frontend.mfcc`, the model's feature mean/std).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import TARGET_RATE, load_audio, read_audio, write_wav
from edge.frontend import mfcc
from training.data.manifest import COMMAND_WORDS

__all__ = [
    "CALIBRATION_DIR",
    "MANIFEST_COLUMNS",
    "CalibrationError",
    "CalibrationPlan",
    "CalibrationSet",
    "calibration_inputs",
    "generate_calibration_set",
    "load_calibration_set",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_DIR = REPO_ROOT / "calibration_data"
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "file",
    "kind",
    "dataset",
    "source_path",
    "word",
    "speaker",
    "split",
    "license",
    "gain_db",
    "source_offset_seconds",
)
KINDS = ("speech", "quiet", "loud", "silence", "noise")
BENCHMARK_DATASET = "gsc_v2_test"
TRAINING_SPLITS = frozenset({"train", "training"})
# FSDD is CC BY-SA 4.0: a window cut from it stays under that licence.
LICENCE_OF_DERIVED = {"CC-BY-SA-4.0": "CC-BY-SA-4.0"}


class CalibrationError(ValueError):
    """A calibration set that is missing, empty, unreadable or inconsistent with its manifest."""


@dataclass(frozen=True)
class CalibrationPlan:
    """How many windows of each kind; 300 x 1.5 s of 16-bit audio is about 14.4 MB."""

    seed: int = 0
    window_seconds: float = 1.5
    speech: int = 230
    quiet: int = 25
    loud: int = 25
    silence: int = 8
    noise: int = 12
    quiet_gain_db: tuple[float, float] = (-30.0, -18.0)
    loud_peak: tuple[float, float] = (0.9, 0.99)
    noise_gain_db: tuple[float, float] = (-12.0, 6.0)

    @property
    def total(self) -> int:
        return self.speech + self.quiet + self.loud + self.silence + self.noise


@dataclass(frozen=True)
class CalibrationSet:
    windows: npt.NDArray[np.float32]  # [N, window_samples], 16 kHz
    rows: tuple[dict[str, str], ...]
    directory: Path


def _pick_speech(clips: Sequence[object], count: int, rng: np.random.Generator) -> list[object]:
    """Round-robin over words (shuffled), a new speaker each time where the word has one left."""
    by_label: dict[str, list[object]] = defaultdict(list)
    for clip in clips:
        by_label[clip.label].append(clip)  # type: ignore[attr-defined]
    labels = sorted(by_label)
    for label in labels:
        order = rng.permutation(len(by_label[label]))
        by_label[label] = [by_label[label][i] for i in order]
    used_speakers: set[str] = set()
    picked: list[object] = []
    label_order = [labels[i] for i in rng.permutation(len(labels))]
    while len(picked) < count and any(by_label[label] for label in label_order):
        for label in label_order:
            pool = by_label[label]
            if not pool or len(picked) >= count:
                continue
            fresh = next((c for c in pool if c.speaker not in used_speakers), pool[0])  # type: ignore[attr-defined]
            pool.remove(fresh)
            used_speakers.add(fresh.speaker)  # type: ignore[attr-defined]
            picked.append(fresh)
    if len(picked) < count:
        raise CalibrationError(f"only {len(picked)} usable speech clips, the plan needs {count}")
    return picked


def _db(gain: float) -> float:
    return float(20.0 * np.log10(max(gain, 1e-12)))


def generate_calibration_set(
    out_dir: Path, data_dir: Path | None = None, plan: CalibrationPlan = CalibrationPlan()
) -> Path:
    """Write `plan.total` WAV windows and `manifest.csv` to `out_dir`, replacing its clips atomically.

    The previous clips are kept in `build/calibration_data.prev`; a README.md already in `out_dir` is kept.
    """
    from training.data.dataset import noise_files, training_clips
    from training.data.paths import kws_data_dir
    from training.data.windows import fit_window, load_window, window_samples

    root = kws_data_dir(data_dir)
    rng = np.random.default_rng(plan.seed)
    length = window_samples(plan.window_seconds)
    candidates = [
        clip
        for clip in training_clips([root])
        if clip.split in TRAINING_SPLITS and clip.word.strip().lower() not in COMMAND_WORDS
    ]
    speech_total = plan.speech + plan.quiet + plan.loud
    speech_clips = _pick_speech(candidates, speech_total, rng)
    kinds = ["speech"] * plan.speech + ["quiet"] * plan.quiet + ["loud"] * plan.loud
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    noises = noise_files(root)
    if not noises:
        raise CalibrationError(f"{root}: no gsc_noise recordings for the noise windows")

    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows: list[dict[str, str]] = []

    def add(kind: str, audio: npt.NDArray[np.float32], source: dict[str, str], gain_db: float) -> None:
        name = f"{len(rows):03d}_{kind}.wav"
        write_wav(staging / name, np.clip(audio, -1.0, 32767 / 32768))
        rows.append({"file": name, "kind": kind, "gain_db": f"{gain_db:.2f}", **source})

    for clip, kind in tqdm(list(zip(speech_clips, kinds, strict=True)), desc="speech windows", unit="clip"):
        window = load_window(clip, plan.window_seconds)
        peak = float(np.max(np.abs(window))) or 1.0
        if kind == "quiet":
            gain = 10.0 ** (rng.uniform(*plan.quiet_gain_db) / 20.0)
        elif kind == "loud":
            gain = rng.uniform(*plan.loud_peak) / peak
        else:
            gain = 1.0
        source = {
            "dataset": clip.dataset,
            "source_path": clip.path.relative_to(root).as_posix(),
            "word": clip.word,
            "speaker": clip.speaker,
            "split": clip.split,
            "license": LICENCE_OF_DERIVED.get(clip.license, clip.license),
            "source_offset_seconds": "",
        }
        add(kind, (window * gain).astype(np.float32), source, _db(gain))

    noise_audio = {path: load_audio(path, TARGET_RATE) for path in noises}
    for index in range(plan.noise + plan.silence):
        kind = "noise" if index < plan.noise else "silence"
        path = noises[index % len(noises)]
        audio = noise_audio[path]
        start = int(rng.integers(0, max(1, audio.shape[0] - length)))
        segment = fit_window(audio[start : start + length], length)
        # Silence: digital zeros for half, a barely audible room tone (-60 dB of a noise take) for the rest.
        if kind == "silence":
            gain = 0.0 if index % 2 == 0 else 10.0 ** (-60.0 / 20.0)
        else:
            gain = 10.0 ** (rng.uniform(*plan.noise_gain_db) / 20.0)
        source = {
            "dataset": "gsc_noise",
            "source_path": path.relative_to(root).as_posix() if gain > 0 else "",
            "word": "_silence_" if kind == "silence" else "_noise_",
            "speaker": "",
            "split": "noise",
            "license": "CC-BY-4.0",
            "source_offset_seconds": f"{start / TARGET_RATE:.3f}" if gain > 0 else "",
        }
        add(kind, (segment * gain).astype(np.float32), source, _db(gain) if gain > 0 else -240.0)

    _write_manifest(staging / MANIFEST_NAME, rows)
    _check_rows(rows, staging / MANIFEST_NAME)
    if (out_dir / "README.md").is_file():
        shutil.copy2(out_dir / "README.md", staging / "README.md")
    if out_dir.exists():
        previous = REPO_ROOT / "build" / f"{out_dir.name}.prev"
        shutil.rmtree(previous, ignore_errors=True)
        previous.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out_dir), previous)
    os.replace(staging, out_dir)
    log.info("wrote %d calibration windows to %s", len(rows), out_dir)
    return out_dir


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in MANIFEST_COLUMNS})
        handle.flush()
        os.fsync(handle.fileno())


def _check_rows(rows: Sequence[dict[str, str]], where: Path) -> None:
    for number, row in enumerate(rows, start=2):
        if row["kind"] not in KINDS:
            raise CalibrationError(f"{where}:{number}: kind {row['kind']!r}, expected one of {KINDS}")
        if row["dataset"] == BENCHMARK_DATASET:
            raise CalibrationError(
                f"{where}:{number}: {row['file']} comes from the benchmark {BENCHMARK_DATASET}"
            )
        if row["word"].strip().lower() in COMMAND_WORDS:
            raise CalibrationError(f"{where}:{number}: {row['file']} is the command word {row['word']!r}")


def load_calibration_set(directory: Path = CALIBRATION_DIR) -> CalibrationSet:
    """Read and check every window of a calibration set; any problem raises CalibrationError naming it."""
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        raise CalibrationError(
            f"{manifest}: no calibration manifest; regenerate the set with `python -m conversion.calibration`"
        )
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = tuple(reader.fieldnames or ())
            rows = tuple(dict(row) for row in reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CalibrationError(f"{manifest}: unreadable ({error})") from error
    if set(columns) != set(MANIFEST_COLUMNS):
        raise CalibrationError(f"{manifest}: columns {list(columns)}, expected {list(MANIFEST_COLUMNS)}")
    if not rows:
        raise CalibrationError(f"{manifest}: the calibration set is empty; it needs representative windows")
    _check_rows(rows, manifest)
    windows = []
    for row in rows:
        path = directory / row["file"]
        try:
            audio, rate = read_audio(path)
        except (OSError, ValueError, RuntimeError) as error:
            raise CalibrationError(f"{path}: unreadable calibration clip ({error})") from error
        if rate != TARGET_RATE or audio.ndim != 1:
            raise CalibrationError(
                f"{path}: expected mono {TARGET_RATE} Hz audio, got {rate} Hz, shape {audio.shape}"
            )
        windows.append(audio)
    lengths = {audio.shape[0] for audio in windows}
    if len(lengths) != 1:
        raise CalibrationError(
            f"{directory}: clips differ in length ({sorted(lengths)} samples); expected one"
        )
    return CalibrationSet(np.stack(windows).astype(np.float32), rows, directory)


def calibration_inputs(
    windows: npt.NDArray[np.float32],
    window_samples: int,
    feature_mean: Sequence[float],
    feature_std: Sequence[float],
) -> npt.NDArray[np.float32]:
    """Encoder inputs [N, frames, n_mfcc]: each window fitted to the model's window, MFCC, normalised."""
    from training.data.windows import fit_window

    mean = np.asarray(feature_mean, dtype=np.float32)
    std = np.asarray(feature_std, dtype=np.float32)
    features = np.stack([mfcc(fit_window(window, window_samples)) for window in windows])
    inputs: npt.NDArray[np.float32] = ((features - mean) / std).astype(np.float32)
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.calibration", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=CALIBRATION_DIR, help="output folder (default %(default)s)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="speech data (default $KWS_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=CalibrationPlan.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = CalibrationPlan(seed=args.seed)
    try:
        out = generate_calibration_set(args.out, args.data_dir, plan)
    except (CalibrationError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    size = sum(path.stat().st_size for path in out.glob("*.wav"))
    print(f"{out}: {plan.total} windows of {plan.window_seconds} s, {size / 1e6:.1f} MB; plan {asdict(plan)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
