"""Writing generated corpora: atomic files, 16-bit FLAC clips, the manifest, silence trimming, TOML options.

Shared by `synthetic` (TTS corpus), `lsk` (LibriSpeech keywords) and `filtering`. Clips are written to a
temporary name and renamed, so an interrupted build never leaves a half-written clip under its final name.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edge.audio import TARGET_RATE
from edge.fileio import atomic_write_bytes as write_atomically
from edge.fileio import atomic_write_json as write_json_atomically
from edge.fileio import atomic_write_text as write_text_atomically
from training.data.manifest import MANIFEST_COLUMNS
from training.figures import save_figure

ConfigT = TypeVar("ConfigT")

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "clip_seconds_if_valid",
    "load_toml_options",
    "trim_silence",
    "write_flac_atomic",
    "write_json_atomic",
    "write_manifest",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

TRIM_FRAME = 160  # 10 ms at 16 kHz


def atomic_write_bytes(path: Path, data: bytes, keep_previous: bool = True) -> None:
    """Write `data` to `path` atomically; the old file, when there is one, is kept complete as `<name>.prev`."""
    write_atomically(path, data, keep_previous_as=".prev" if keep_previous else None)


def atomic_write_text(path: Path, text: str, keep_previous: bool = True) -> None:
    write_text_atomically(path, text, keep_previous_as=".prev" if keep_previous else None)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    write_json_atomically(path, payload, keep_previous_as=".prev")


def write_manifest(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write manifest rows (dicts with exactly MANIFEST_COLUMNS) atomically; returns the row count."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        extra = set(row) - set(MANIFEST_COLUMNS)
        missing = set(MANIFEST_COLUMNS) - set(row)
        if extra or missing:
            raise ValueError(
                f"{path}: manifest row {dict(row)} has extra {extra} / missing {missing} columns"
            )
        writer.writerow(row)
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count


def write_flac_atomic(path: Path, samples: FloatArray, sample_rate: int = TARGET_RATE) -> None:
    """Write mono float samples as 16-bit FLAC (clipped to [-1, 1]) under a temporary name, then rename."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.flac")
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 32767.0 / 32768.0)
    soundfile.write(str(temporary), clipped, sample_rate, format="FLAC", subtype="PCM_16")
    os.replace(temporary, path)


def clip_seconds_if_valid(path: Path, sample_rate: int = TARGET_RATE) -> float | None:
    """Length in seconds of an existing mono clip at `sample_rate`; None when absent, unreadable or empty."""
    import soundfile

    if not path.is_file():
        return None
    try:
        info = soundfile.info(str(path))
    except Exception:  # soundfile raises its own LibsndfileError and RuntimeError on bad files
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.frames <= 0:
        return None
    return float(info.frames) / float(sample_rate)


def trim_silence(
    samples: FloatArray,
    threshold_db: float = -40.0,
    margin_seconds: float = 0.03,
    sample_rate: int = TARGET_RATE,
) -> FloatArray:
    """Cut leading and trailing frames quieter than `threshold_db` below the loudest 10 ms frame.

    Keeps `margin_seconds` on each side so that soft onsets and releases survive. Returns an empty array for
    silent input (the caller counts that as a failed rendition).
    """
    audio = np.asarray(samples, dtype=np.float32)
    if audio.size == 0:
        return audio
    frames = max(1, audio.shape[0] // TRIM_FRAME)
    padded = np.zeros(frames * TRIM_FRAME, dtype=np.float64)
    padded[: min(audio.shape[0], padded.shape[0])] = audio[: padded.shape[0]]
    rms = np.sqrt(np.mean(np.square(padded.reshape(frames, TRIM_FRAME)), axis=1))
    peak = float(rms.max())
    if peak < 1e-4:
        return np.zeros(0, dtype=np.float32)
    loud = np.flatnonzero(rms >= peak * 10.0 ** (threshold_db / 20.0))
    margin = round(margin_seconds * sample_rate)
    start = max(0, int(loud[0]) * TRIM_FRAME - margin)
    end = min(audio.shape[0], (int(loud[-1]) + 1) * TRIM_FRAME + margin)
    return audio[start:end].copy()


def load_toml_options(path: Path | None, section: str, config_type: type) -> dict[str, Any]:
    """Options for `config_type` (a dataclass) from the `[section]` table of a TOML file; unknown keys fail."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"{path}: no such config file") from error
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from error
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{section}] must be a table, got {type(table).__name__}")
    known = {field.name for field in fields(config_type)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in [{section}]; known keys: {sorted(known)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in table.items()}


def merge_options(
    defaults: Mapping[str, Any], toml: Mapping[str, Any], cli: Mapping[str, Any]
) -> dict[str, Any]:
    """CLI over TOML over defaults: a CLI value of None means 'not given'."""
    merged = dict(defaults)
    merged.update(toml)
    merged.update({key: value for key, value in cli.items() if value is not None})
    return merged


def builder_config(
    args: Any,
    config_type: type[ConfigT],
    section: str,
    comma_lists: Sequence[str] = (),
    repeated: Sequence[str] = (),
) -> ConfigT:
    """A corpus builder's config: its command line over the `[section]` of `args.config` (TOML) over the
    dataclass defaults. `comma_lists` are options given as "a,b,c", `repeated` ones (action="append") arrive as
    lists: both become tuples, as the frozen configs hold them."""
    cli = {field.name: getattr(args, field.name, None) for field in fields(config_type)}  # type: ignore[arg-type]
    for name in comma_lists:
        if cli[name] is not None:
            cli[name] = tuple(item.strip() for item in cli[name].split(",") if item.strip())
    for name in repeated:
        if cli[name] is not None:
            cli[name] = tuple(cli[name])
    toml = load_toml_options(getattr(args, "config", None), section, config_type)
    return config_type(**merge_options({}, toml, cli))


def sequence_text(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > limit else shown


def plot_durations(seconds_by_group: Mapping[str, Sequence[float]], path: Path, title: str) -> None:
    """A PNG histogram of clip lengths per group (e.g. per TTS engine); skipped when matplotlib is missing."""
    if not any(seconds_by_group.values()):
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed: no %s", path.name)
        return
    figure, axes = plt.subplots(figsize=(7, 3.5))
    longest = max((max(values) for values in seconds_by_group.values() if values), default=1.0)
    bins = np.linspace(0.0, max(longest, 0.5), 40).tolist()
    for group, values in sorted(seconds_by_group.items()):
        axes.hist(values, bins=bins, histtype="step", label=f"{group} ({len(values)})")
    axes.set_xlabel("clip length (s)")
    axes.set_ylabel("clips")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
