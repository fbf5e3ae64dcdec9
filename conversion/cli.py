"""`kws-convert`: checkpoint -> ONNX -> onnx2tf saved model -> calibrated int8 TFLite -> verified, published.

Steps (each also runs alone; `all` runs them in order):
  export    checkpoint -> <work>/udkws.onnx (fixed input [1, frames, 40])
  tf        ONNX -> <work>/saved_model (onnx2tf, input shape kept)
  quantize  saved model + calibration_data/ -> <work>/udkws_int8.tflite + .json (not yet verified)
  verify    checks the candidate against the float model; only when every check passes are the model and its
            sidecar published to <output>/udkws_int8.tflite|.json (the previous pair kept as *.prev)
Settings: command line over `--config file.toml` over defaults; unknown TOML keys are errors.
Exit status: 0 passed, 1 a verification check failed, 2 bad input or a failed conversion step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conversion.calibration import CALIBRATION_DIR, CalibrationError, calibration_inputs, load_calibration_set
from conversion.cohort import cohort_main, publish_cohort
from conversion.onnx_to_tf import Onnx2TfError, onnx_to_saved_model
from conversion.quantize import QuantizationError, quantize_saved_model
from conversion.sidecar import (
    build_sidecar,
    publish_pair,
    read_sidecar,
    sidecar_path_for,
)
from conversion.verify import VerifyConfig, verify_model
from edge.fileio import atomic_write_bytes, atomic_write_json
from training.export import (
    INPUT_NAME,
    CheckpointError,
    ModelSource,
    export_onnx,
    file_sha256,
    load_model_source,
)

__all__ = ["ConvertConfig", "main", "run_steps"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = ("export", "tf", "quantize", "verify")
WEIGHT_SCALES = ("auto", "per-channel", "per-tensor")


class ConversionError(RuntimeError):
    """A step's input is missing or belongs to another checkpoint."""


@dataclass(frozen=True)
class ConvertConfig:
    checkpoint: Path = REPO_ROOT / "training" / "shipped" / "udkws_edge.pt"
    output_dir: Path = REPO_ROOT / "build"
    work_dir: Path = REPO_ROOT / "build" / "convert"
    name: str = "udkws_int8"
    calibration_dir: Path = CALIBRATION_DIR
    data_dir: Path | None = None
    # "auto": per-channel weight scales unless that model exceeds verify.max_model_bytes, then per-tensor.
    weight_scales: str = "auto"
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def __post_init__(self) -> None:
        for name in ("checkpoint", "output_dir", "work_dir", "calibration_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.weight_scales not in WEIGHT_SCALES:
            raise ValueError(f"weight_scales: expected one of {WEIGHT_SCALES}, got {self.weight_scales!r}")
        if not self.name or "/" in self.name:
            raise ValueError(f"name: expected a plain file stem, got {self.name!r}")

    @property
    def onnx_path(self) -> Path:
        return self.work_dir / "udkws.onnx"

    @property
    def saved_model_dir(self) -> Path:
        return self.work_dir / "saved_model"

    @property
    def candidate(self) -> Path:
        return self.work_dir / f"{self.name}.tflite"

    @property
    def stamp(self) -> Path:
        return self.work_dir / "source.json"


def config_from_toml(path: Path) -> dict[str, Any]:
    try:
        values = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: not a readable TOML file ({error})") from error
    known = {f.name for f in fields(ConvertConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    if "verify" in values:
        verify_known = {f.name for f in fields(VerifyConfig)}
        bad = sorted(set(values["verify"]) - verify_known)
        if bad:
            raise ValueError(f"{path}: unknown key(s) {bad} in [verify]; known: {sorted(verify_known)}")
        values["verify"] = VerifyConfig(**values["verify"])
    return values


def _check_stamp(config: ConvertConfig, source: ModelSource, step: str) -> None:
    """The work files must come from this checkpoint, not a stale earlier run."""
    if not config.stamp.is_file():
        raise ConversionError(f"{config.stamp}: missing; run `kws-convert export` before `{step}`")
    recorded = json.loads(config.stamp.read_text()).get("checkpoint_sha256")
    if recorded != source.checkpoint_sha256:
        raise ConversionError(
            f"{config.work_dir} was exported from another checkpoint ({str(recorded)[:12]}...), not "
            f"{source.checkpoint_path} ({source.checkpoint_sha256[:12]}...); run `kws-convert export` first"
        )


def step_export(config: ConvertConfig, source: ModelSource) -> dict[str, Any]:
    export_onnx(source, config.onnx_path)
    stamp = {"checkpoint": str(source.checkpoint_path), "checkpoint_sha256": source.checkpoint_sha256}
    atomic_write_json(config.stamp, stamp)
    return {"onnx": str(config.onnx_path), "input_shape": list(source.input_shape)}


def step_tf(config: ConvertConfig, source: ModelSource) -> dict[str, Any]:
    _check_stamp(config, source, "tf")
    onnx_to_saved_model(config.onnx_path, config.saved_model_dir, INPUT_NAME)
    return {"saved_model": str(config.saved_model_dir)}


def step_quantize(config: ConvertConfig, source: ModelSource) -> dict[str, Any]:
    _check_stamp(config, source, "quantize")
    calibration = load_calibration_set(config.calibration_dir)
    inputs = calibration_inputs(
        calibration.windows, source.window_samples, source.feature_mean, source.feature_std
    )
    quantize_args = (config.saved_model_dir, inputs, source.input_shape, source.embedding_dim)
    quantized = quantize_saved_model(*quantize_args, per_channel=config.weight_scales != "per-tensor")
    scales_note = config.weight_scales
    if config.weight_scales == "auto" and len(quantized.data) > config.verify.max_model_bytes:
        log.warning(
            "per-channel int8 model is %d bytes > %d: using per-tensor weight scales",
            len(quantized.data),
            config.verify.max_model_bytes,
        )
        scales_note = f"auto: per-tensor (per-channel was {len(quantized.data)} bytes)"
        quantized = quantize_saved_model(*quantize_args, per_channel=False)
    import onnx2tf
    import tensorflow as tf

    conversion = {
        "exporter": "torch.onnx.export dynamo=False, opset 17",
        "onnx2tf": getattr(onnx2tf, "__version__", "?"),
        "tensorflow": tf.__version__,
        "quantizer": "TFLiteConverter.from_saved_model, full int8, int8 input and output",
        "weight_scales": "per-channel" if quantized.per_channel else scales_note,
        "calibration_windows": quantized.calibration_windows,
        "calibration_manifest_sha256": file_sha256(calibration.directory / "manifest.csv"),
    }
    sidecar = build_sidecar(
        source,
        config.candidate.name,
        quantized.data,
        quantized.input_quantization,
        quantized.output_quantization,
        verification=None,
        extra=conversion,
    )
    # Model first, sidecar second: edge.model rejects a model whose sidecar hash does not match.
    atomic_write_bytes(config.candidate, quantized.data)
    atomic_write_json(sidecar_path_for(config.candidate), sidecar)
    return {"candidate": str(config.candidate), "bytes": len(quantized.data), **conversion}


def step_verify(config: ConvertConfig, source: ModelSource) -> dict[str, Any]:
    sidecar_path = sidecar_path_for(config.candidate)
    sidecar = read_sidecar(sidecar_path)
    if sidecar["checkpoint_sha256"] != source.checkpoint_sha256:
        raise ConversionError(
            f"{sidecar_path}: converted from checkpoint {sidecar['checkpoint_sha256'][:12]}..., not "
            f"{source.checkpoint_path}; run `kws-convert all`"
        )
    try:
        _check_stamp(config, source, "verify")
        float_onnx: Path | None = config.onnx_path if config.onnx_path.is_file() else None
    except ConversionError:
        float_onnx = None  # the ONNX file is not this checkpoint's: the float side runs in torch
    figures = verify_model(config.candidate, source, config.verify, config.data_dir, float_onnx)
    sidecar["verification"] = figures
    atomic_write_json(sidecar_path, sidecar)
    if figures["passed"]:
        model, meta = publish_pair(config.candidate, config.output_dir, config.name)
        figures["published"] = [str(model), str(meta)]
        cohort = publish_cohort(model)
        if cohort is not None:
            figures["published"].append(str(cohort))
    return figures


STEP_FUNCTIONS = {"export": step_export, "tf": step_tf, "quantize": step_quantize, "verify": step_verify}


def run_steps(config: ConvertConfig, steps: Sequence[str]) -> dict[str, Any]:
    """Run the named steps in order; returns their results and seconds. Raises on bad input."""
    started = time.perf_counter()
    source = load_model_source(config.checkpoint)
    results: dict[str, Any] = {}
    for step in steps:
        step_started = time.perf_counter()
        results[step] = STEP_FUNCTIONS[step](config, source)
        results[step]["seconds"] = round(time.perf_counter() - step_started, 1)
        log.info("%s done in %.1f s", step, results[step]["seconds"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=(*STEPS, "all"), nargs="?", default="all")
    parser.add_argument("--config", type=Path, help="TOML file of ConvertConfig fields ([verify] table too)")
    parser.add_argument(
        "--checkpoint", type=Path, help="udkws checkpoint (default training/shipped/udkws_edge.pt)"
    )
    parser.add_argument("--output-dir", type=Path, help="where the verified model goes (default build/)")
    parser.add_argument("--work-dir", type=Path, help="intermediate files (default build/convert/)")
    parser.add_argument("--calibration-dir", type=Path, help="calibration set (default calibration_data/)")
    parser.add_argument("--data-dir", type=Path, help="speech data for verification (default $KWS_DATA_DIR)")
    parser.add_argument("--weight-scales", choices=WEIGHT_SCALES, help="int8 weight scales (default auto)")
    parser.add_argument(
        "--no-eer", action="store_true", help="skip the 5-shot EER check (reported as skipped)"
    )
    parser.add_argument(
        "--eer-max-clips-per-word", type=int, help="subsample the benchmark (quick runs only)"
    )
    parser.add_argument(
        "--tflite-runtime-python", help="python of a venv with tflite-runtime, to try the model"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def resolve_config(args: argparse.Namespace) -> ConvertConfig:
    values: dict[str, Any] = config_from_toml(args.config) if args.config else {}
    for name in ("checkpoint", "output_dir", "work_dir", "calibration_dir", "data_dir", "weight_scales"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    verify = values.get("verify", VerifyConfig())
    if args.no_eer:
        verify = replace(verify, eer_check=False)
    if args.eer_max_clips_per_word is not None:
        verify = replace(verify, eer_max_clips_per_word=args.eer_max_clips_per_word)
    if args.tflite_runtime_python:
        verify = replace(verify, tflite_runtime_python=args.tflite_runtime_python)
    values["verify"] = verify
    return ConvertConfig(**values)


def _print_verification(figures: dict[str, Any]) -> None:
    fidelity, collapse, task = figures["fidelity"], figures["collapse"], figures["task"]
    print(
        f"fidelity: {fidelity['windows']} held-out windows of {fidelity['words']} words, float/int8 cosine "
        f"mean {fidelity['mean_cosine']:.4f}, min {fidelity['min_cosine']:.4f}"
    )
    for kind in ("int8", "float"):
        print(
            f"collapse ({kind}): same-word mean cosine {collapse[kind]['same_word_mean_cosine']:.3f}, "
            f"different-word {collapse[kind]['different_word_mean_cosine']:.3f}"
        )
    if task.get("checked"):
        note = " (subsampled benchmark)" if task["subsampled"] else ""
        print(
            f"{task['shots']}-shot EER{note}: float {task['float_eer_percent']:.2f} %, int8 "
            f"{task['int8_eer_percent']:.2f} % (delta {task['delta_points']:+.2f} points, {task['clips']} clips)"
        )
    else:
        print("EER check: skipped")
    print(f"ops: {figures['ops']['ops']}; model {figures['model_bytes']} bytes")
    for name, result in figures["runtimes"].items():
        print(f"runtime {name}: {json.dumps(result)}")
    for failure in figures["failures"]:
        print(f"FAILED: {failure}")
    print("verification: " + ("passed" if figures["passed"] else "FAILED (nothing published)"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cohort"]:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return cohort_main(argv[1:])
        except (FileNotFoundError, ValueError) as error:
            print(f"kws-convert cohort: error: {error}", file=sys.stderr)
            return 2
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = resolve_config(args)
        steps = STEPS if args.step == "all" else (args.step,)
        results = run_steps(config, steps)
    except (
        CheckpointError,
        CalibrationError,
        ConversionError,
        Onnx2TfError,
        QuantizationError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"kws-convert: error: {error}", file=sys.stderr)
        return 2
    for step in steps:
        if step != "verify":
            print(f"{step}: {json.dumps({k: v for k, v in results[step].items()})}")
    print(f"total {results['seconds']:.1f} s for {', '.join(steps)}")
    if "verify" in results:
        _print_verification(results["verify"])
        if results["verify"]["passed"]:
            print("published: " + ", ".join(results["verify"]["published"]))
        return 0 if results["verify"]["passed"] else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
