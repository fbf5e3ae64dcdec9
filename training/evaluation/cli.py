"""`kws-eval`: the user-defined keyword protocol on gsc_v2_test for a checkpoint, a TFLite model, a teacher
or MFCC+DTW, in clean audio or under acoustic conditions (`--condition clean noise10 reverb`).

Writes into the output folder: `results.json` (every metric per k and seed, means and stds, the setup),
`results.md` (a table of means ± std in %), `det.png` (DET curves) and `scores.png` (score histograms); with
any condition other than clean alone, one such folder per condition plus `conditions.md`/`conditions.json`
side by side. Options: command line over the `[eval]` table of `--config` TOML over the defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.fileio import file_sha256
from training.data.corpus_io import atomic_write_text, load_toml_options, merge_options, write_json_atomic
from training.evaluation.conditions import CONDITIONS, ConditionConfig, describe
from training.evaluation.protocol import BENCHMARK_DATASET, TARGET_WORDS, Scorer, as_scorer, evaluate

__all__ = ["EvalConfig", "TeacherEmbedder", "build_scorer", "conditions_table", "main", "markdown_table"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

# (key in the metrics, column title); all are fractions printed as percentages.
TABLE_COLUMNS = (
    ("eer", "EER"),
    ("frr_at_far_2.5", "FRR @ FAR 2.5 %"),
    ("frr_at_far_10", "FRR @ FAR 10 %"),
    ("closed_set_accuracy", "closed-set acc."),
    ("macro_f1", "macro F1"),
    ("open_set_accuracy", "open-set acc. @ 5 % FA"),
)


@dataclass(frozen=True)
class EvalConfig:
    shots: tuple[int, ...] = (1, 5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_clips_per_word: int | None = None
    dtw_aggregate: str = "min"
    dtw_coefficients: int = 13
    num_threads: int = 1
    batch_size: int = 64
    conditions: tuple[str, ...] = ("clean",)
    corrupt_enrollment: bool = False
    eval_noise: tuple[str, ...] = ()  # files or folders; () = the reserved default (asc-music)
    cache: bool = True

    def __post_init__(self) -> None:
        unknown = [name for name in self.conditions if name not in CONDITIONS]
        if not self.conditions or unknown:
            raise ValueError(
                f"conditions: expected some of {', '.join(CONDITIONS)}, got {list(self.conditions)}"
            )
        if not self.shots or any(not isinstance(k, int) or k < 1 for k in self.shots):
            raise ValueError(f"shots: expected positive integers, got {self.shots}")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed")
        if self.max_clips_per_word is not None and self.max_clips_per_word < max(self.shots) + 1:
            raise ValueError(
                f"max_clips_per_word: {self.max_clips_per_word} leaves no test clip for {max(self.shots)}-shot "
                f"enrollment; use at least {max(self.shots) + 1}"
            )
        if self.num_threads < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_threads and batch_size must be >= 1, got {self.num_threads}, {self.batch_size}"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-eval",
        description=(
            f"User-defined keyword protocol on {BENCHMARK_DATASET}: the ten command words "
            f"({' '.join(TARGET_WORDS)}) enrolled from k random takes, tested against every other clip "
            "(their remaining takes, 25 unknown words, silence). Prints a table; writes results.json, "
            "results.md, det.png and scores.png."
        ),
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--checkpoint", type=Path, help="a training checkpoint (.pt), run in float32 with torch"
    )
    model.add_argument("--tflite", type=Path, help="an int8 .tflite model with its sidecar .json beside it")
    model.add_argument("--baseline", choices=["mfcc-dtw"], help="a baseline with no model: MFCC + DTW")
    model.add_argument("--teacher", choices=sorted(_teacher_names()), help="a distillation teacher, float32")
    parser.add_argument(
        "--teacher-model", type=Path, help="--teacher: its model file (default: the packaged one)"
    )
    parser.add_argument(
        "--condition",
        dest="conditions",
        nargs="+",
        choices=CONDITIONS,
        help="acoustic conditions of the test clips, one run each: clean, noise10 (music at 10 dB SNR), "
        "reverb (simulated rooms); default: clean",
    )
    parser.add_argument(
        "--corrupt-enrollment",
        action="store_true",
        default=None,
        help="corrupt the enrollment takes too (default: users enroll in quiet, only test clips are corrupted)",
    )
    parser.add_argument(
        "--eval-noise", nargs="+", help="noise files or folders for noise10 (default: asc-music)"
    )
    parser.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        default=None,
        help="embed again, do not use cache/eval/",
    )
    parser.add_argument("--shots", type=int, nargs="+", help="enrollment takes per keyword (default: 1 5 10)")
    parser.add_argument("--seeds", type=int, nargs="+", help="random enrollment draws (default: 0 1 2)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/eval/<model>-<UTC time>)")
    parser.add_argument(
        "--data-dir", type=Path, help="speech data folder (default: $KWS_DATA_DIR, ../shared/data)"
    )
    parser.add_argument("--config", type=Path, help="a TOML file whose [eval] table sets these options")
    parser.add_argument(
        "--max-clips-per-word",
        type=int,
        help="keep at most this many clips of each word: a quick check, NOT the benchmark (default: all)",
    )
    parser.add_argument(
        "--dtw-aggregate", choices=["min", "mean"], help="mfcc-dtw: min or mean distance to the k takes (min)"
    )
    parser.add_argument("--dtw-coefficients", type=int, help="mfcc-dtw: MFCC coefficients used, 1..40 (13)")
    parser.add_argument("--num-threads", type=int, help="CPU threads for torch or LiteRT (default: 1)")
    parser.add_argument("--batch-size", type=int, help="windows embedded per call (default: 64)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    defaults = asdict(EvalConfig())
    toml = load_toml_options(args.config, "eval", EvalConfig)
    cli = {f.name: getattr(args, f.name, None) for f in fields(EvalConfig)}
    cli = {key: tuple(value) if isinstance(value, list) else value for key, value in cli.items()}
    return EvalConfig(**merge_options(defaults, toml, cli))


def _teacher_names() -> list[str]:
    from training.distill.teachers import TEACHERS

    return list(TEACHERS)


@dataclass(frozen=True)
class TeacherEmbedder:
    """A distillation teacher (`training.distill.teachers`) as a protocol embedder."""

    teacher: Any

    @property
    def name(self) -> str:
        return f"teacher {self.teacher.name} (float32)"

    @property
    def window_seconds(self) -> float:
        return float(self.teacher.window_samples / self.teacher.sample_rate)

    def embed(self, audio: Any) -> Any:
        return self.teacher.embed(audio)


def build_scorer(
    args: argparse.Namespace, config: EvalConfig, progress: bool
) -> tuple[Scorer, dict[str, Any]]:
    """The scorer the arguments ask for, and what identifies it (path, sha256) for the results."""
    if args.baseline == "mfcc-dtw":
        from training.evaluation.dtw import DtwConfig, MfccDtwScorer

        dtw = DtwConfig(n_coefficients=config.dtw_coefficients, aggregate=config.dtw_aggregate)
        return MfccDtwScorer(dtw, progress=progress), {"kind": "mfcc-dtw", "dtw": asdict(dtw)}
    from training.evaluation.protocol import EmbeddingScorer

    if args.teacher is not None:
        from training.distill.teachers import load_teacher

        teacher = load_teacher(args.teacher, args.teacher_model, threads=config.num_threads)
        identity = {
            "kind": "teacher",
            "name": teacher.name,
            "sha256": teacher.sha256,
            "licence": teacher.licence,
        }
        identity["path"] = str(getattr(teacher, "model_path", args.teacher))
        scorer = EmbeddingScorer(TeacherEmbedder(teacher), batch_size=config.batch_size, progress=progress)
        return scorer, identity
    path = args.checkpoint if args.checkpoint is not None else args.tflite
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    identity = {"path": str(path), "sha256": file_sha256(path)}
    if args.checkpoint is not None:
        from training.evaluation.embedders import CheckpointEmbedder

        embedder: Any = CheckpointEmbedder(args.checkpoint, num_threads=config.num_threads)
        identity["kind"] = "checkpoint"
    else:
        from training.evaluation.embedders import TfliteEmbedder

        embedder = TfliteEmbedder(args.tflite, num_threads=config.num_threads)
        identity["kind"] = "tflite"
    return EmbeddingScorer(embedder, batch_size=config.batch_size, progress=progress), identity


def markdown_table(summary: dict[str, Any]) -> str:
    """Means ± std over seeds, in %, one row per k."""
    header = "| k | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for shots, block in summary["shots"].items():
        cells = []
        for key, _ in TABLE_COLUMNS:
            if key in block["mean"]:
                cells.append(f"{100 * block['mean'][key]:.1f} ± {100 * block['std'][key]:.1f}")
            else:
                cells.append("-")
        lines.append(f"| {shots} | " + " | ".join(cells) + " |")
    counts = summary["counts"]
    note = (
        f"\n{summary['scorer']} on {summary['benchmark']}: {counts['target']} target, {counts['unknown']} unknown "
        f"and {counts['silence']} silence clips; seeds {summary['seeds']}; window {summary['window_seconds']} s; "
        "mean ± sample std over seeds, in %.\n"
    )
    return "\n".join(lines) + "\n" + note


def _default_out(identity: dict[str, Any]) -> Path:
    stem = Path(identity["path"]).stem if "path" in identity else identity["kind"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return REPO_ROOT / "runs" / "eval" / f"{stem}-{stamp}"


def _condition_options(config: EvalConfig, identity: dict[str, Any], condition: str) -> dict[str, Any] | None:
    """What `evaluate` needs beyond the clean benchmark; None keeps today's clean path (no cache)."""
    from training.evaluation.condition_scoring import code_fingerprint

    model_id = None
    if config.cache and "sha256" in identity:
        model_id = code_fingerprint(identity["sha256"])
    if condition == "clean" and model_id is None:
        return None
    condition_config = (
        ConditionConfig(noise_paths=config.eval_noise) if config.eval_noise else ConditionConfig()
    )
    return {"config": condition_config, "corrupt_enrollment": config.corrupt_enrollment, "model_id": model_id}


def _run_condition(
    args: argparse.Namespace,
    config: EvalConfig,
    scorer: Scorer,
    identity: dict[str, Any],
    condition: str,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    options = _condition_options(config, identity, condition)
    result = evaluate(
        scorer,
        data_dir=args.data_dir,
        shots=config.shots,
        seeds=config.seeds,
        max_clips_per_word=config.max_clips_per_word,
        progress=progress,
        return_result=True,
        condition=condition,
        condition_options=options,
    )
    elapsed = time.perf_counter() - started
    summary = result.summary()
    summary["window_seconds"] = scorer.window_seconds
    subsampled = config.max_clips_per_word is not None
    summary["benchmark"] = f"{BENCHMARK_DATASET} (subsampled)" if subsampled else BENCHMARK_DATASET
    summary["condition"] = condition
    if condition != "clean":
        summary["condition_setup"] = {
            **describe(options["config"] if options else ConditionConfig()),
            "enrollment": "corrupted" if config.corrupt_enrollment else "clean",
        }
    out.mkdir(parents=True, exist_ok=True)
    from training.evaluation.plots import plot_det, plot_score_histograms

    plot_det(result, out / "det.png")
    plot_score_histograms(result, out / "scores.png")
    table = markdown_table(summary)
    payload = {
        **summary,
        "model": identity,
        "config": asdict(config),
        "command": sys.argv,
        "seconds": round(elapsed, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "results.json", payload)
    atomic_write_text(out / "results.md", table)
    print(f"{condition}:\n{table}")
    print(f"results in {out} ({elapsed:.0f} s)")
    return payload


SIDE_BY_SIDE = (
    ("eer", "EER"),
    ("frr_at_far_10", "FRR @ FAR 10 %"),
    ("open_set_accuracy", "open-set acc. @ 5 % FA"),
)


def conditions_table(payloads: Sequence[dict[str, Any]]) -> str:
    """One row per (condition, k): the headline metrics and the EER change from clean, in %."""
    clean = next((p for p in payloads if p["condition"] == "clean"), None)
    lines = [
        "| condition | k | " + " | ".join(title for _, title in SIDE_BY_SIDE) + " | EER change from clean |",
        "|---" * (len(SIDE_BY_SIDE) + 3) + "|",
    ]
    for payload in payloads:
        for shots, block in payload["shots"].items():
            cells = [
                f"{100 * block['mean'][key]:.1f} ± {100 * block['std'][key]:.1f}" for key, _ in SIDE_BY_SIDE
            ]
            change = "-"
            if clean is not None and payload is not clean and shots in clean["shots"]:
                change = f"{100 * (block['mean']['eer'] - clean['shots'][shots]['mean']['eer']):+.1f}"
            lines.append(f"| {payload['condition']} | {shots} | " + " | ".join(cells) + f" | {change} |")
    first = payloads[0]
    return (
        "\n".join(lines)
        + f"\n\n{first['scorer']}; seeds {first['seeds']}; mean ± sample std over seeds, in %.\n"
    )


def run(args: argparse.Namespace) -> Path:
    config = resolve_config(args)
    progress = not args.no_progress
    scorer, identity = build_scorer(args, config, progress)
    scorer = as_scorer(scorer, progress)
    out = args.out if args.out is not None else _default_out(identity)
    if config.conditions == ("clean",):
        _run_condition(args, config, scorer, identity, "clean", out, progress)
        return out
    payloads = [
        _run_condition(args, config, scorer, identity, condition, out / condition, progress)
        for condition in config.conditions
    ]
    table = conditions_table(payloads)
    write_json_atomic(out / "conditions.json", {"model": identity, "conditions": payloads})
    atomic_write_text(out / "conditions.md", table)
    print(table)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"kws-eval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
