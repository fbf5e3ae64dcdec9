"""`data stats` (words, speakers, clips and hours per corpus) and `data bench` (data pipeline timings).

`add_data_commands(subparsers)` adds `data stats|bench` to `kws-train`; each command sets `func(args) -> int`.
On its own: `python -m training.data.cli stats [--data-dir DIR] [--root CORPUS_ROOT ...]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.dataset import BENCHMARK_DATASETS, COMMAND_WORDS, NOISE_DATASETS
from training.data.manifest import Clip, read_manifest
from training.data.paths import kws_data_dir

__all__ = ["CorpusStats", "add_data_commands", "corpus_stats", "format_stats", "main"]


@dataclass(frozen=True)
class CorpusStats:
    name: str
    words: int
    speakers: int
    clips: int
    hours: float
    role: str


def _role(dataset: str) -> str:
    if dataset in BENCHMARK_DATASETS:
        return "benchmark only"
    if dataset in NOISE_DATASETS:
        return "noise"
    return "training"


def corpus_stats(clips: Sequence[Clip]) -> list[CorpusStats]:
    """One row per dataset, then a `total` row (words: distinct classes; shared English words count once)."""
    rows = []

    def summary(name: str, group: Sequence[Clip], role: str) -> CorpusStats:
        words = {c.label for c in group if c.dataset not in NOISE_DATASETS and not c.word.startswith("_")}
        speakers = {c.speaker for c in group if "?" not in c.speaker}
        return CorpusStats(
            name, len(words), len(speakers), len(group), sum(c.seconds for c in group) / 3600, role
        )

    for dataset in sorted({c.dataset for c in clips}):
        rows.append(summary(dataset, [c for c in clips if c.dataset == dataset], _role(dataset)))
    trainable = [
        c
        for c in clips
        if _role(c.dataset) == "training" and c.label not in COMMAND_WORDS and not c.word.startswith("_")
    ]
    rows.append(summary("training total", trainable, "usable for training"))
    rows.append(summary("total", clips, ""))
    return rows


def format_stats(title: str, rows: Sequence[CorpusStats]) -> str:
    header = f"{'corpus':<16} {'words':>6} {'speakers':>9} {'clips':>7} {'hours':>7}  role"
    lines = [title, header, "-" * len(header)]
    for row in rows:
        if row.name == "training total":
            lines.append("-" * len(header))
        lines.append(
            f"{row.name:<16} {row.words:>6} {row.speakers:>9} {row.clips:>7} {row.hours:>7.2f}  {row.role}".rstrip()
        )
    return "\n".join(lines)


def run_registry_stats(names: Sequence[str]) -> int:
    """Stats of every built registered corpus (or of `names`), a hint for each missing one, and the rooms."""
    from training.data.corpora import built_corpora

    built, missing = built_corpora(names=names)
    everything: list[Clip] = []
    for corpus in built:
        if corpus.role == "speech":
            clips = corpus.clips()
            everything.extend(clips)
            print(format_stats(f"{corpus.name}: {corpus.root()} ({corpus.license})", corpus_stats(clips)))
        else:
            print(format_sounds(corpus.name, corpus.root()))
        print()
    if len([c for c in built if c.role == "speech"]) > 1:
        print(format_stats("all speech corpora together", corpus_stats(everything)))
    for corpus in missing:
        print(corpus.missing_hint())
    return 0


def format_sounds(name: str, root: Path) -> str:
    """Files and hours per kind and split of a rooms/noise set (`sounds.csv`)."""
    from collections import Counter

    from training.data.rooms import read_sounds

    files: Counter[tuple[str, str]] = Counter()
    seconds: Counter[tuple[str, str]] = Counter()
    for row in read_sounds(root):
        files[(row["kind"], row["split"])] += 1
        seconds[(row["kind"], row["split"])] += float(row["seconds"])
    lines = [f"{name}: {root}", f"{'kind':<14} {'split':<6} {'files':>6} {'hours':>7}", "-" * 36]
    lines += [f"{k:<14} {s:<6} {files[(k, s)]:>6} {seconds[(k, s)] / 3600:>7.2f}" for k, s in sorted(files)]
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    if args.corpus or (args.data_dir is None and not args.root):
        return run_registry_stats(args.corpus)
    roots: list[Path] = []
    try:
        roots.append(kws_data_dir(args.data_dir))
    except FileNotFoundError as error:
        if not args.root:
            print(error, file=sys.stderr)
            return 2
        print(f"note: {error.args[0].splitlines()[0]}", file=sys.stderr)
    roots.extend(Path(root) for root in args.root)
    everything: list[Clip] = []
    for root in roots:
        clips = read_manifest(root)
        everything.extend(clips)
        print(format_stats(f"root: {root.resolve()}", corpus_stats(clips)))
        print()
    if len(roots) > 1:
        print(format_stats("all roots together", corpus_stats(everything)))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Time the data pipeline on the training split: decode + cache, reopen, augmented epoch, MFCC cache."""
    import tempfile
    import time

    import torch

    from training.data.augment import build_augmenter
    from training.data.dataset import WindowDataset, speaker_split, training_clips
    from training.data.features import FeatureCache
    from training.data.sampler import ClassBalancedSampler

    root = kws_data_dir(args.data_dir)
    train, _ = speaker_split(training_clips([root]), 0.1, seed=0)
    with tempfile.TemporaryDirectory(prefix="udkws-data-bench-") as scratch:
        cache = Path(args.cache_root) if args.cache_root else Path(scratch)
        start = time.perf_counter()
        dataset = WindowDataset(train, args.window, random_placement=True, cache_root=cache)
        print(
            f"decode + cache {len(dataset)} clips ({args.window} s windows): {time.perf_counter() - start:.1f} s"
        )
        start = time.perf_counter()
        dataset = WindowDataset(train, args.window, random_placement=True, cache_root=cache, progress=False)
        print(f"reopen the cache: {time.perf_counter() - start:.2f} s")
        dataset.augment = build_augmenter(background_speech=dataset.background_speech)
        sampler = ClassBalancedSampler(dataset.labels, args.words, args.takes, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
        start = time.perf_counter()
        windows = sum(batch["audio"].shape[0] for batch in loader)
        elapsed = time.perf_counter() - start
        covered = len({i for batch in sampler for i in batch}) / len(dataset)
        print(
            f"augmented epoch: {len(sampler)} batches of {args.words}x{args.takes}, {windows} windows, "
            f"{elapsed:.1f} s, {windows / elapsed:.0f} windows/s, {covered:.0%} of the clips"
        )
        if args.features:
            start = time.perf_counter()
            FeatureCache(cache).load_or_build(dataset)
            print(f"MFCC feature cache: {time.perf_counter() - start:.1f} s")
    return 0


def _add_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="time decoding, caching, augmentation and batching")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--window", type=float, default=1.5, help="window seconds (default 1.5)")
    parser.add_argument("--words", type=int, default=32, help="words per batch (default 32)")
    parser.add_argument("--takes", type=int, default=4, help="takes per word (default 4)")
    parser.add_argument("--features", action="store_true", help="also build the MFCC feature cache")
    parser.add_argument(
        "--cache-root", default=None, help="keep the caches here (default: a temporary folder)"
    )
    parser.set_defaults(func=run_bench)


def _add_stats(subparsers: Any) -> None:
    parser = subparsers.add_parser("stats", help="words, speakers, clips and hours per corpus")
    parser.add_argument(
        "--data-dir", default=None, help="speech data directory (default: $KWS_DATA_DIR or ../shared/data)"
    )
    parser.add_argument(
        "--root", action="append", default=[], help="a generated corpus root with a manifest.csv (repeatable)"
    )
    parser.add_argument(
        "--corpus",
        action="append",
        default=[],
        help="a registered corpus (shared, synthetic, lsk, speechocean762, kokoro, rooms; repeatable). "
        "Without --corpus, --data-dir or --root: every built corpus",
    )
    parser.set_defaults(func=run_stats)


def run_pack(args: argparse.Namespace) -> int:
    """Pack the clips a training config selects (its [data] section, before the speaker split)."""
    from training.config import load_config
    from training.data.pack import write_pack
    from training.prepare import select_clips

    config = load_config(args.config, list(args.set))
    if config.data.pack:
        raise ValueError(f"{args.config}: data.pack is set; a pack is built from manifests, not from a pack")
    clips = select_clips(config.data)
    path = write_pack(clips, config.data.window_seconds, Path(args.output), progress=True)
    print(f"{path}: {len(clips)} clips, {path.stat().st_size} bytes")
    return 0


def _add_pack(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pack", help="MFCC windows of a config's clips in one file, to train where the audio is not"
    )
    parser.add_argument(
        "--config", help="training TOML whose [data] section selects the clips (default: defaults)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", required=True, help="the pack to write (.npz)")
    parser.set_defaults(func=run_pack)


_BUILDERS = {
    "synthetic": ("training.data.synthetic", "build_synthetic_main", "render the synthetic many-word corpus"),
    "lsk": (
        "training.data.lsk",
        "build_lsk_main",
        "cut LibriSpeech Keywords clips from LibriSpeech + alignments",
    ),
    "filter": ("training.data.filtering", "filter_main", "filter a corpus (ASR or embedding filter)"),
    "speechocean": (
        "training.data.speechocean",
        "build_speechocean_main",
        "cut speechocean762 train speakers' words (alignment + ASR filter)",
    ),
    "kokoro": ("training.data.kokoro", "build_kokoro_main", "render the Kokoro many-word corpus (resumable)"),
    "rooms": ("training.data.rooms", "build_rooms_main", "impulse responses and noise beds, train/eval"),
}


def _add_builders(commands: Any) -> None:
    """Corpus builders keep their own option parsers: everything after the name goes to them (`--help` too)."""
    for name, (_module, _function, summary) in _BUILDERS.items():
        parser = commands.add_parser(name, help=f"{summary} (see its --help)", add_help=False)
        parser.add_argument("builder_args", nargs=argparse.REMAINDER)
        parser.set_defaults(func=lambda args, name=name: run_builder(name, args.builder_args))


def run_builder(name: str, argv: Sequence[str]) -> int:
    import importlib

    module, function, _ = _BUILDERS[name]
    return int(getattr(importlib.import_module(module), function)(list(argv)))


def split_builder_argv(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """`data synthetic ...` -> ("synthetic", [...]): argparse cannot pass leading options through a subparser."""
    args = list(argv)
    for i in range(len(args) - 1):
        if args[i] == "data" and args[i + 1] in _BUILDERS and all(a.startswith("-") for a in args[:i]):
            return args[i + 1], args[i + 2 :]
    return None


def add_data_commands(subparsers: Any) -> None:
    """Add `data stats|bench|pack|<builders>` to a command line's subparsers (`args.func(args)` runs it)."""
    data = subparsers.add_parser("data", help="inspect and build the speech corpora")
    data_commands = data.add_subparsers(
        dest="data_command", required=True, metavar="{stats,bench,pack," + ",".join(_BUILDERS) + "}"
    )
    _add_stats(data_commands)
    _add_bench(data_commands)
    _add_pack(data_commands)
    _add_builders(data_commands)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.data.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="{stats,bench}")
    _add_stats(commands)
    _add_bench(commands)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
