"""The synthetic many-word corpus: every vocabulary word rendered by many TTS voices.

Clips are 16 kHz mono 16-bit FLAC, silence-trimmed, under `<output>/clips/<word>/<speaker slug>.flac`, listed
in `<output>/manifest.csv` (the ../shared/data format; dataset `synthetic`, speaker `engine:voice:variant`,
split `train`/`validation` by voice) with `<output>/corpus.json` (vocabulary, engines, voices, seed, timing,
failures). The build is deterministic by seed, resumable (valid clips already on disk are kept) and parallel.

    python -m training.data.synthetic --words 20 --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.audio import TARGET_RATE, resample
from training.data.corpus_io import (
    builder_config,
    clip_seconds_if_valid,
    plot_durations,
    trim_silence,
    write_flac_atomic,
    write_json_atomic,
    write_manifest,
)
from training.data.paths import REPO_ROOT
from training.data.tts_engines import (
    ENGINES,
    ESPEAK_VARIANT_POOL,
    RenderOutcome,
    VoiceSpec,
    available_engines,
    drop_uninstalled_voices,
    engine_version,
    jitter_for,
    render_batch,
)

if TYPE_CHECKING:
    from training.data.vocabulary import Vocabulary

__all__ = ["BuildReport", "SyntheticConfig", "build_synthetic", "build_synthetic_main", "plan_voices"]

log = logging.getLogger(__name__)

DATASET = "synthetic"
LONG_CLIP_SECONDS = 1.5
LICENSES = {
    "espeak-ng": "synthetic-espeak-ng-GPL-3.0-or-later",
    "flite": "synthetic-flite-BSD-style",
    "festival": "synthetic-festival-BSD-style",
    "piper": "synthetic-piper-joe-CC0-1.0",
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that decides the corpus; `corpus.json` records it."""

    output_dir: str = str(REPO_ROOT / "corpora" / "synthetic")
    words: int = 1000
    exclude_words: tuple[str, ...] = ()
    exclude_file: str | None = None
    seed: int = 0
    jobs: int = 2
    engines: tuple[str, ...] = ENGINES
    espeak_voices: tuple[str, ...] = (
        "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
    )  # fmt: skip
    espeak_variants_per_voice: int = 4
    flite_voices: tuple[str, ...] = ("kal", "kal16", "awb", "rms", "slt")
    flite_variants: int = 2
    festival_voices: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
    festival_variants: int = 2
    piper_voices: tuple[str, ...] = ("joe",)
    piper_variants: int = 4
    validation_fraction: float = 0.15
    batch_words: int = 40

    def __post_init__(self) -> None:
        unknown = sorted(set(self.engines) - set(ENGINES))
        if unknown:
            raise ValueError(f"engines: unknown {unknown}; expected some of {list(ENGINES)}")
        if self.words < 1 or self.jobs < 1 or self.batch_words < 1:
            raise ValueError(
                f"words, jobs and batch_words must be >= 1 (got {self.words}, {self.jobs}, {self.batch_words})"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")


@dataclass(frozen=True)
class BuildReport:
    clips: int
    rendered: int
    skipped: int
    failed: int
    seconds: float
    manifest: Path


def _seeded_rng(seed: int, *keys: str) -> np.random.Generator:
    digest = hashlib.sha256("|".join([str(seed), *keys]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_voices(config: SyntheticConfig, engines: Sequence[str]) -> list[tuple[VoiceSpec, str]]:
    """Every (voice, split) of the corpus. Validation voices are whole voices (all their variants)."""
    per_engine: dict[str, list[tuple[str, list[str]]]] = {}
    if "espeak-ng" in engines:
        pool = list(ESPEAK_VARIANT_POOL)
        count = min(config.espeak_variants_per_voice, len(pool))
        per_engine["espeak-ng"] = [
            (
                voice,
                sorted(_seeded_rng(config.seed, "espeak", voice).choice(pool, count, replace=False).tolist()),
            )
            for voice in config.espeak_voices
        ]
    for engine, engine_voices, variant_count in (
        ("flite", config.flite_voices, config.flite_variants),
        ("festival", config.festival_voices, config.festival_variants),
        ("piper", config.piper_voices, config.piper_variants),
    ):
        if engine in engines:
            variant_names = [f"v{index + 1}" for index in range(variant_count)]
            per_engine[engine] = [(voice, variant_names) for voice in engine_voices]
    planned: list[tuple[VoiceSpec, str]] = []
    for engine, voice_variants in per_engine.items():
        names = [voice for voice, _ in voice_variants]
        held_out = round(config.validation_fraction * len(names))
        if config.validation_fraction > 0 and len(names) >= 3:
            held_out = max(1, held_out)
        validation = set(_seeded_rng(config.seed, "split", engine).permutation(names)[:held_out].tolist())
        for voice, variants in voice_variants:
            split = "validation" if voice in validation else "train"
            planned.extend((VoiceSpec(engine, voice, variant), split) for variant in variants)
    return planned


# A task: one voice, a batch of words, and where the clips go.
Task = tuple[VoiceSpec, str, tuple[str, ...], int, str]


def _render_task(task: Task) -> dict[str, Any]:
    voice, split, words, seed, output_dir = task
    root = Path(output_dir)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    skipped = 0
    todo = []
    for word in words:
        relative = f"clips/{word}/{voice.slug}.flac"
        seconds = clip_seconds_if_valid(root / relative)
        if seconds is not None:
            skipped += 1
            rows.append(_row(relative, word, voice, split, seconds))
        else:
            todo.append((word, jitter_for(seed, voice, word)))
    rendered = 0
    if todo:
        try:
            outcomes = render_batch(voice, todo)
        except Exception as error:  # an engine crash costs this batch, not the build
            outcomes = [RenderOutcome(word, None, 0, f"{type(error).__name__}: {error}") for word, _ in todo]
        for outcome in outcomes:
            if outcome.error is not None or outcome.audio is None:
                failures.append(f"{voice.speaker} {outcome.word!r}: {outcome.error}")
                continue
            audio = outcome.audio
            if outcome.sample_rate != TARGET_RATE:
                audio = resample(audio, outcome.sample_rate, TARGET_RATE)
            audio = trim_silence(audio)
            if audio.size == 0 or not np.isfinite(audio).all():
                failures.append(f"{voice.speaker} {outcome.word!r}: silent or non-finite rendition")
                continue
            relative = f"clips/{outcome.word}/{voice.slug}.flac"
            # Peak-normalise to -1 dBFS: engines differ wildly in level; augmentation sets the gain later.
            audio = (audio * (0.89 / max(float(np.abs(audio).max()), 1e-6))).astype(np.float32)
            write_flac_atomic(root / relative, audio)
            rendered += 1
            rows.append(_row(relative, outcome.word, voice, split, audio.shape[0] / TARGET_RATE))
    return {"rows": rows, "rendered": rendered, "skipped": skipped, "failures": failures}


def _row(relative: str, word: str, voice: VoiceSpec, split: str, seconds: float) -> dict[str, Any]:
    return {
        "path": relative,
        "dataset": DATASET,
        "word": word,
        "speaker": voice.speaker,
        "take": "1",
        "split": split,
        "sample_rate": TARGET_RATE,
        "seconds": f"{seconds:.4f}",
        "license": LICENSES[voice.engine],
    }


def build_synthetic(config: SyntheticConfig, vocabulary: Vocabulary | None = None) -> BuildReport:
    """Render the corpus described by `config` (resuming where clips exist) and write manifest and metadata."""
    from tqdm import tqdm

    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    if vocabulary is None:
        # Imported here: the vocabulary rules pull in the torch data layer, which worker processes never need.
        from training.data.vocabulary import build_vocabulary

        exclude_file = Path(config.exclude_file) if config.exclude_file else None
        vocabulary = build_vocabulary(config.words, config.exclude_words, exclude_file)
    status = available_engines()
    engines = []
    for engine in config.engines:
        if status[engine] is None:
            engines.append(engine)
        else:
            log.warning("engine %s skipped: %s", engine, status[engine])
    if not engines:
        raise RuntimeError(f"no TTS engine is usable: {status}")
    voices, voices_skipped = drop_uninstalled_voices(plan_voices(config, engines))
    for speaker, reason in voices_skipped.items():
        log.warning("voice %s skipped: %s", speaker, reason)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tasks: list[Task] = []
    for voice, split in voices:
        for start in range(0, len(vocabulary.words), config.batch_words):
            batch = tuple(vocabulary.words[start : start + config.batch_words])
            tasks.append((voice, split, batch, config.seed, str(output)))
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    totals: Counter[str] = Counter()
    total_items = len(voices) * len(vocabulary.words)
    with tqdm(total=total_items, unit="clip", desc="synthetic corpus") as progress:
        results: Iterator[dict[str, Any]]
        if config.jobs == 1:
            results = map(_render_task, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(config.jobs)
            results = pool.imap_unordered(_render_task, tasks)
        try:
            for result in results:
                rows.extend(result["rows"])
                failures.extend(result["failures"])
                totals.update(
                    rendered=result["rendered"], skipped=result["skipped"], failed=len(result["failures"])
                )
                progress.update(result["rendered"] + result["skipped"] + len(result["failures"]))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    for failure in failures[:20]:
        log.warning("failed rendition: %s", failure)
    rows.sort(key=lambda row: (row["word"], row["speaker"]))
    manifest = output / "manifest.csv"
    write_manifest(manifest, rows)
    by_engine: dict[str, list[float]] = {}
    for row in rows:
        by_engine.setdefault(row["speaker"].split(":")[0], []).append(float(row["seconds"]))
    plot_durations(by_engine, output / "durations.png", f"synthetic corpus: {len(vocabulary.words)} words")
    elapsed = time.monotonic() - started
    long_clips = sum(float(row["seconds"]) > LONG_CLIP_SECONDS for row in rows)
    write_json_atomic(
        output / "corpus.json",
        {
            "format": "udkws-synthetic-corpus/1",
            "dataset": DATASET,
            "config": asdict(config),
            "vocabulary": vocabulary.to_dict(),
            "engines": {engine: engine_version(engine) for engine in engines},
            "engines_skipped": {engine: status[engine] for engine in config.engines if engine not in engines},
            "voices_skipped": voices_skipped,
            "voices": [{"speaker": voice.speaker, "split": split} for voice, split in voices],
            "seed": config.seed,
            "clips": len(rows),
            "clips_over_1_5_s": long_clips,
            "hours": round(sum(float(row["seconds"]) for row in rows) / 3600.0, 3),
            "rendered": totals["rendered"],
            "skipped_existing": totals["skipped"],
            "failed": totals["failed"],
            "failures": failures[:1000],
            "build_started": started_at,
            "build_seconds": round(elapsed, 1),
        },
    )
    log.info(
        "%d clips (%d rendered, %d kept, %d failed) in %.0f s",
        len(rows),
        totals["rendered"],
        totals["skipped"],
        totals["failed"],
        elapsed,
    )
    return BuildReport(len(rows), totals["rendered"], totals["skipped"], totals["failed"], elapsed, manifest)


def build_parser() -> argparse.ArgumentParser:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m training.data.synthetic",
        description="Render the synthetic many-word corpus (espeak-ng, flite, festival, Piper). Options: "
        "command line over the [synthetic] table of --config over the defaults shown.",
    )
    parser.add_argument("--config", type=Path, help="TOML file with a [synthetic] table of these options")
    parser.add_argument("--output-dir", help=f"corpus root (default {defaults.output_dir})")
    parser.add_argument("--words", type=int, help=f"vocabulary size (default {defaults.words})")
    parser.add_argument(
        "--exclude", action="append", dest="exclude_words", metavar="WORD", help="exclude a word (repeatable)"
    )
    parser.add_argument("--exclude-file", help="text file of words to exclude, one per line (# comments)")
    parser.add_argument(
        "--seed", type=int, help=f"seed of voice choice, split and jitter (default {defaults.seed})"
    )
    parser.add_argument("--jobs", type=int, help=f"worker processes (default {defaults.jobs})")
    parser.add_argument("--engines", help=f"comma-separated engines (default {','.join(defaults.engines)})")
    parser.add_argument(
        "--espeak-voices", help="comma-separated espeak-ng voices (default: 8 English accents)"
    )
    parser.add_argument(
        "--espeak-variants-per-voice",
        type=int,
        help=f"espeak-ng variants per voice (default {defaults.espeak_variants_per_voice})",
    )
    parser.add_argument(
        "--flite-voices", help=f"comma-separated flite voices (default {','.join(defaults.flite_voices)})"
    )
    parser.add_argument(
        "--flite-variants",
        type=int,
        help=f"jittered renditions per flite voice (default {defaults.flite_variants})",
    )
    parser.add_argument(
        "--festival-voices",
        help=f"comma-separated festival voices (default {','.join(defaults.festival_voices)})",
    )
    parser.add_argument(
        "--festival-variants",
        type=int,
        help=f"renditions per festival voice (default {defaults.festival_variants})",
    )
    parser.add_argument(
        "--piper-variants",
        type=int,
        help=f"renditions of the Piper joe voice (default {defaults.piper_variants})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        help=f"share of each engine's voices held out (default {defaults.validation_fraction})",
    )
    parser.add_argument(
        "--batch-words", type=int, help=f"words per worker task (default {defaults.batch_words})"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    return builder_config(
        args,
        SyntheticConfig,
        "synthetic",
        comma_lists=("engines", "espeak_voices", "flite_voices", "festival_voices"),
        repeated=("exclude_words",),
    )


def build_synthetic_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as error:
        print(f"error: {error}")
        return 2
    report = build_synthetic(config)
    print(
        f"{report.clips} clips in {report.manifest} ({report.rendered} rendered, {report.skipped} already there, "
        f"{report.failed} failed) in {report.seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(build_synthetic_main())
