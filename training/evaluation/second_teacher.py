"""`python -m training.evaluation.second_teacher`: is a frame-sequence model worth a second teacher?

For each candidate (Google speech_embedding, Whisper tiny.en's encoder; `training.evaluation.sequences`) on
the clean benchmark: the pooled embedding (mean + thirds), DTW over its frame sequence, EfficientWord-Net
alone, and the equal-weight fusion of EfficientWord-Net with each (z-normalised score sum; the weight is
fixed a priori, nothing is tuned on gsc_v2_test). Writes `second_teacher.json` and `second_teacher.md` into
`--out`, with the cost of each candidate in ms per clip on one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.data.corpus_io import atomic_write_bytes, atomic_write_text, write_json_atomic
from training.data.paths import cache_dir as cache_root
from training.distill.teachers import WhisperTinyTeacher
from training.evaluation.condition_scoring import cached_embeddings, code_fingerprint
from training.evaluation.conditions import DEFAULT_CONDITION_CONFIG
from training.evaluation.embedders import EmbeddingScorer, PreparedEmbeddings, PreparedScorer
from training.evaluation.protocol import load_benchmark, load_windows, run_protocol
from training.evaluation.sequences import (
    FusedPrepared,
    PreparedSequences,
    SequenceDtwScorer,
    SpeechEmbeddingFrames,
    pool_frames,
)

__all__ = ["main"]

log = logging.getLogger(__name__)

CANDIDATES = ("speech-embedding", "whisper-tiny", "whisper-tiny-30s")
WINDOW_SECONDS = 1.5
TIMING_CLIPS = 64


def build_candidate(name: str) -> Any:
    if name == "speech-embedding":
        return SpeechEmbeddingFrames(threads=1)
    if name in ("whisper-tiny", "whisper-tiny-30s"):
        return WhisperTinyTeacher(threads=1, pad_to_30s=name.endswith("30s"))
    raise ValueError(f"candidate: expected one of {', '.join(CANDIDATES)}, got {name!r}")


def cached_frames(encoder: Any, audio: np.ndarray, keys: Sequence[str], progress: bool) -> np.ndarray:
    """The candidate's frames of every clip [N, T, D], float16 in cache/eval/frames/."""
    keys_hash = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    path = cache_root() / "eval" / "frames" / f"{encoder.name}-{encoder.sha256[:16]}-{keys_hash}.npy"
    if path.is_file():
        return np.load(path).astype(np.float32)
    frames = SequenceDtwScorer(encoder, WINDOW_SECONDS, progress=progress).encode_all(audio)
    buffer = io.BytesIO()
    np.save(buffer, frames.astype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue(), keep_previous=False)
    return frames


def ms_per_clip(encoder: Any, audio: np.ndarray) -> float:
    """Wall time of the candidate's frames, one clip at a time, one thread (median over TIMING_CLIPS)."""
    times = []
    for window in audio[:TIMING_CLIPS]:
        started = time.perf_counter()
        encoder.frames(window[None, :])
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def teacher_embeddings(paths: Sequence[Path], keys: Sequence[str], progress: bool) -> np.ndarray:
    from training.distill.teachers import load_teacher
    from training.evaluation.cli import TeacherEmbedder

    teacher = load_teacher("efficientword-net", threads=1)
    scorer = EmbeddingScorer(TeacherEmbedder(teacher), progress=progress)
    model_id = code_fingerprint(teacher.sha256)
    return cached_embeddings(scorer, paths, keys, "clean", DEFAULT_CONDITION_CONFIG, model_id, None, progress)


def _row(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    shots = summary["shots"]
    return {
        "scorer": name,
        "eer": {k: shots[k]["mean"]["eer"] for k in shots},
        "eer_std": {k: shots[k]["std"]["eer"] for k in shots},
        "frr_at_far_10_k5": shots["5"]["mean"]["frr_at_far_10"] if "5" in shots else None,
        "open_set_k10": shots["10"]["mean"]["open_set_accuracy"] if "10" in shots else None,
        "summary": summary,
    }


def markdown(rows: Sequence[dict[str, Any]], costs: dict[str, float]) -> str:
    lines = [
        "| scorer | EER k=1 | EER k=5 | EER k=10 | FRR @ FAR 10 %, k=5 | open-set acc. @ 5 % FA, k=10 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{100 * row['eer'][k]:.1f} ± {100 * row['eer_std'][k]:.1f}" for k in ("1", "5", "10")]
        cells.append(f"{100 * row['frr_at_far_10_k5']:.1f}")
        cells.append(f"{100 * row['open_set_k10']:.1f}")
        lines.append(f"| {row['scorer']} | " + " | ".join(cells) + " |")
    cost_text = "; ".join(f"{name}: {ms:.1f} ms per 1.5 s clip" for name, ms in costs.items())
    return (
        "\n".join(lines)
        + f"\n\nmean ± sample std over seeds 0, 1, 2, in %. Cost (one thread): {cost_text}.\n"
    )


def run(args: argparse.Namespace) -> Path:
    progress = not args.no_progress
    eval_set, paths = load_benchmark(args.data_dir, args.max_clips_per_word)
    audio = load_windows(paths, WINDOW_SECONDS, progress)
    shots, seeds = tuple(args.shots), tuple(args.seeds)

    def protocol(name: str, prepared: PreparedScorer) -> dict[str, Any]:
        started = time.perf_counter()
        row = _row(name, run_protocol(prepared, eval_set, shots, seeds, name, progress).summary())
        log.info(
            "%s: EER %s (%.0f s)",
            name,
            {k: round(100 * v, 1) for k, v in row["eer"].items()},
            time.perf_counter() - started,
        )
        return row

    costs: dict[str, float] = {}
    frames_by_candidate = {}
    for candidate in args.candidates:  # the candidates first: the teacher's embeddings are usually cached
        encoder = build_candidate(candidate)
        costs[candidate] = ms_per_clip(encoder, audio)
        frames_by_candidate[candidate] = cached_frames(encoder, audio, eval_set.keys, progress)
        del encoder
    teacher = PreparedEmbeddings(teacher_embeddings(paths, eval_set.keys, progress))
    rows = [protocol("EfficientWord-Net", teacher)]
    for candidate, frames in frames_by_candidate.items():
        pooled = PreparedEmbeddings(pool_frames(frames))
        sequences = PreparedSequences(
            frames / np.maximum(np.linalg.norm(frames, axis=2, keepdims=True), 1e-12)
        )
        rows.append(protocol(f"{candidate} pooled", pooled))
        rows.append(protocol(f"{candidate} DTW", sequences))
        rows.append(
            protocol(f"EfficientWord-Net + {candidate} pooled", FusedPrepared((teacher, pooled), (1.0, 1.0)))
        )
        rows.append(
            protocol(f"EfficientWord-Net + {candidate} DTW", FusedPrepared((teacher, sequences), (1.0, 1.0)))
        )
    table = markdown(rows, costs)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "rows": rows,
        "ms_per_clip": costs,
        "command": sys.argv,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(args.out / "second_teacher.json", payload)
    atomic_write_text(args.out / "second_teacher.md", table)
    print(table)
    return args.out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluation.second_teacher", description=__doc__)
    parser.add_argument(
        "--candidates", nargs="+", choices=CANDIDATES, default=["speech-embedding", "whisper-tiny"]
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-clips-per-word", type=int, help="a quick check, NOT the benchmark")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/eval-second-teacher"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"second_teacher: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
