"""The int8 TFLite encoder on the board: sidecar checks, quantisation, batching and L2 normalisation.

`load_model("build/udkws_int8.tflite")` reads the sidecar `udkws_int8.json` beside it (contract in
docs/ARCHITECTURE.md), checks that it describes this very file (sha256) and this front end (fingerprint), and
that the interpreter's tensors agree with it. `Encoder.embed_windows(audio [N, L])` then runs the whole chain
the daemon runs: MFCC, normalisation, quantisation, inference, dequantisation, L2 normalisation.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.fileio import file_sha256
from edge.frontend import DEFAULT_CONFIG, FrontendConfig, mfcc, num_frames

__all__ = [
    "SIDECAR_FORMAT",
    "Encoder",
    "ModelError",
    "Sidecar",
    "file_sha256",
    "load_model",
    "sidecar_path_for",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

SIDECAR_FORMAT = "udkws-model/1"
_QUANT_RTOL = 1e-5
_REQUIRED_FIELDS = (
    "format",
    "model_sha256",
    "frontend_fingerprint",
    "window_samples",
    "frames",
    "n_mfcc",
    "embedding_dim",
    "feature_mean",
    "feature_std",
    "input_quantization",
    "output_quantization",
)


class ModelError(ValueError):
    """The model file or its sidecar is missing, inconsistent, or made for another front end."""


def sidecar_path_for(tflite_path: str | Path) -> Path:
    """`build/udkws_int8.tflite` -> `build/udkws_int8.json`."""
    return Path(tflite_path).with_suffix(".json")


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int

    @classmethod
    def parse(cls, value: Any, where: str) -> Quantization:
        if not isinstance(value, dict) or set(value) != {"scale", "zero_point"}:
            raise ModelError(f"{where}: expected {{'scale': float, 'zero_point': int}}, got {value!r}")
        scale, zero_point = value["scale"], value["zero_point"]
        if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
            raise ModelError(f"{where}.scale: expected a positive finite number, got {scale!r}")
        if not isinstance(zero_point, int) or isinstance(zero_point, bool) or not -128 <= zero_point <= 255:
            raise ModelError(f"{where}.zero_point: expected an integer in [-128, 255], got {zero_point!r}")
        return cls(float(scale), zero_point)


@dataclass(frozen=True)
class Sidecar:
    """The validated fields of the sidecar that the runtime uses; `raw` holds the whole JSON object."""

    model_sha256: str
    frontend_fingerprint: str
    window_samples: int
    frames: int
    n_mfcc: int
    embedding_dim: int
    feature_mean: FloatArray
    feature_std: FloatArray
    input_quantization: Quantization
    output_quantization: Quantization
    raw: dict[str, Any]

    @classmethod
    def parse(cls, raw: Any, where: str) -> Sidecar:
        if not isinstance(raw, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        missing = [name for name in _REQUIRED_FIELDS if name not in raw]
        if missing:
            raise ModelError(
                f"{where}: missing field(s) {missing} (see docs/ARCHITECTURE.md, 'Converted model')"
            )
        if raw["format"] != SIDECAR_FORMAT:
            raise ModelError(f"{where}: format {raw['format']!r}, expected {SIDECAR_FORMAT!r}")
        ints = {}
        for name in ("window_samples", "frames", "n_mfcc", "embedding_dim"):
            value = raw[name]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelError(f"{where}: field {name!r} must be a positive integer, got {value!r}")
            ints[name] = value
        vectors = {}
        for name in ("feature_mean", "feature_std"):
            try:
                wide = np.asarray(raw[name], dtype=np.float64)  # float64: a value beyond float32 is refused
            except (TypeError, ValueError) as error:
                raise ModelError(f"{where}: field {name!r} must be a list of numbers ({error})") from error
            finite = np.all(np.isfinite(wide)) and np.all(np.abs(wide) <= np.finfo(np.float32).max)
            if wide.shape != (ints["n_mfcc"],) or not finite:
                raise ModelError(
                    f"{where}: field {name!r} must hold {ints['n_mfcc']} finite numbers, got shape {wide.shape}"
                )
            vectors[name] = wide.astype(np.float32)
        if np.any(vectors["feature_std"] <= 0):
            raise ModelError(f"{where}: field 'feature_std' must be positive everywhere")
        return cls(
            model_sha256=str(raw["model_sha256"]),
            frontend_fingerprint=str(raw["frontend_fingerprint"]),
            feature_mean=vectors["feature_mean"],
            feature_std=vectors["feature_std"],
            input_quantization=Quantization.parse(raw["input_quantization"], f"{where}: input_quantization"),
            output_quantization=Quantization.parse(
                raw["output_quantization"], f"{where}: output_quantization"
            ),
            raw=raw,
            **ints,
        )


def _make_interpreter(model_path: Path, num_threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as error:
            raise RuntimeError(
                "no TFLite runtime: install 'ai-edge-litert' (pip install 'udkws[edge]') or 'tflite-runtime'"
            ) from error
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"{model_path}: not a loadable TFLite model ({error})") from error
    return interpreter


class Encoder:
    """An int8 TFLite encoder with its sidecar. Thread-compatible, not thread-safe (one interpreter)."""

    def __init__(self, model_path: Path, sidecar: Sidecar, interpreter: Any, sha256: str) -> None:
        self.model_path = model_path
        self.sidecar = sidecar
        self.sha256 = sha256
        self._interpreter = interpreter
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        self._input_index = int(input_detail["index"])
        self._output_index = int(output_detail["index"])
        self._input_dtype = np.dtype(input_detail["dtype"])
        self._output_dtype = np.dtype(output_detail["dtype"])
        self._mean = sidecar.feature_mean
        self._inv_std = (1.0 / sidecar.feature_std).astype(np.float32)

    @property
    def window_samples(self) -> int:
        return self.sidecar.window_samples

    @property
    def frames(self) -> int:
        return self.sidecar.frames

    @property
    def embedding_dim(self) -> int:
        return self.sidecar.embedding_dim

    @property
    def frontend_fingerprint(self) -> str:
        return self.sidecar.frontend_fingerprint

    def info(self) -> dict[str, Any]:
        """The sidecar as read (a copy), plus where the model was loaded from."""
        info = dict(self.sidecar.raw)
        info["loaded_from"] = str(self.model_path)
        return info

    def normalize_features(self, features: FloatArray) -> FloatArray:
        normalized: FloatArray = ((features - self._mean) * self._inv_std).astype(np.float32)
        return normalized

    def embed_features(self, features: npt.ArrayLike, normalized: bool = False) -> FloatArray:
        """Embeddings of MFCC windows [frames, n_mfcc] or [N, frames, n_mfcc] -> [N, D], L2-normalised.

        `normalized=False` (default): raw `edge.frontend.mfcc` output, normalised here with the sidecar's
        mean/std; `normalized=True`: already normalised.
        """
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 2:
            array = array[None]
        expected = (self.sidecar.frames, self.sidecar.n_mfcc)
        if array.ndim != 3 or array.shape[1:] != expected:
            raise ValueError(
                f"embed_features: expected [N, {expected[0]}, {expected[1]}] features, got {array.shape}"
            )
        if not normalized:
            array = self.normalize_features(array)
        out = np.empty((array.shape[0], self.sidecar.embedding_dim), dtype=np.float32)
        for row in range(array.shape[0]):
            out[row] = self._invoke(array[row])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: FloatArray = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def embed_windows(self, audio: npt.ArrayLike) -> FloatArray:
        """Embeddings of audio windows float32 [N, window_samples] (16 kHz) -> float32 [N, D], L2-normalised."""
        array = np.asarray(audio)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != self.window_samples:
            raise ValueError(
                f"embed_windows: expected audio [N, {self.window_samples}] at 16 kHz, got shape {array.shape}"
            )
        if array.shape[0] == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        features = np.stack([mfcc(window) for window in array])
        return self.embed_features(features)

    def _invoke(self, normalized: FloatArray) -> FloatArray:
        batch = normalized[None]
        if self._input_dtype in (np.int8, np.uint8):
            quant = self.sidecar.input_quantization
            info = np.iinfo(self._input_dtype)
            q = np.clip(np.round(batch / quant.scale) + quant.zero_point, info.min, info.max)
            self._interpreter.set_tensor(self._input_index, q.astype(self._input_dtype))
        else:
            self._interpreter.set_tensor(self._input_index, batch.astype(self._input_dtype))
        self._interpreter.invoke()
        raw = np.asarray(self._interpreter.get_tensor(self._output_index)).reshape(-1)
        if self._output_dtype in (np.int8, np.uint8):
            quant = self.sidecar.output_quantization
            return ((raw.astype(np.float32) - quant.zero_point) * quant.scale).astype(np.float32)
        return raw.astype(np.float32)


def _check_tensors(interpreter: Any, sidecar: Sidecar, where: str) -> None:
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{where}: expected 1 input and 1 output tensor, got {len(inputs)} and {len(outputs)}"
        )
    checks = (
        ("input", inputs[0], (1, sidecar.frames, sidecar.n_mfcc), sidecar.input_quantization),
        ("output", outputs[0], (1, sidecar.embedding_dim), sidecar.output_quantization),
    )
    for kind, detail, shape, quant in checks:
        actual = tuple(int(v) for v in detail["shape"])
        if actual != shape:
            raise ModelError(f"{where}: the model's {kind} shape is {actual}, the sidecar says {shape}")
        if np.dtype(detail["dtype"]) in (np.int8, np.uint8):
            scale, zero_point = detail["quantization"]
            if not math.isclose(scale, quant.scale, rel_tol=_QUANT_RTOL) or zero_point != quant.zero_point:
                raise ModelError(
                    f"{where}: the model's {kind} quantization is scale {scale}, zero point {zero_point}; "
                    f"the sidecar says scale {quant.scale}, zero point {quant.zero_point}"
                )


def load_model(
    tflite_path: str | Path,
    sidecar_path: str | Path | None = None,
    num_threads: int = 1,
    frontend: FrontendConfig = DEFAULT_CONFIG,
) -> Encoder:
    """Load and check an encoder: sha256, front-end fingerprint, window size, tensor shapes and quantisation."""
    model_path = Path(tflite_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file (build it with `make convert`, or pass --model)")
    meta_path = Path(sidecar_path) if sidecar_path is not None else sidecar_path_for(model_path)
    if not meta_path.is_file():
        raise ModelError(
            f"{meta_path}: the model's sidecar JSON is missing; it is written beside the model by "
            "`make convert`"
        )
    if num_threads < 1:
        raise ValueError(f"load_model: num_threads must be >= 1, got {num_threads}")
    try:
        raw = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{meta_path}: not readable JSON ({error})") from error
    sidecar = Sidecar.parse(raw, str(meta_path))
    sha256 = file_sha256(model_path)
    if sha256 != sidecar.model_sha256:
        raise ModelError(
            f"{meta_path}: model_sha256 {sidecar.model_sha256[:12]}... does not match {model_path} "
            f"({sha256[:12]}...): the sidecar belongs to another model file; copy the pair together"
        )
    if sidecar.frontend_fingerprint != frontend.fingerprint:
        raise ModelError(
            f"{meta_path}: the model was trained with front end {sidecar.frontend_fingerprint}, but this "
            f"edge/frontend.py is {frontend.fingerprint}: install the udkws version the model was built with, "
            "or re-convert (and re-train if the front end changed) the model with this version"
        )
    expected_frames = num_frames(sidecar.window_samples, frontend)
    if sidecar.frames != expected_frames or sidecar.n_mfcc != frontend.n_mfcc:
        raise ModelError(
            f"{meta_path}: window_samples {sidecar.window_samples} gives {expected_frames} frames x "
            f"{frontend.n_mfcc}, but the sidecar says {sidecar.frames} x {sidecar.n_mfcc}"
        )
    interpreter = _make_interpreter(model_path, num_threads)
    _check_tensors(interpreter, sidecar, str(model_path))
    log.info(
        "loaded %s (%s, %d-d embedding, %d-sample window, %d thread(s))",
        model_path,
        sidecar.raw.get("model_name", "?"),
        sidecar.embedding_dim,
        sidecar.window_samples,
        num_threads,
    )
    return Encoder(model_path, sidecar, interpreter, sha256)
