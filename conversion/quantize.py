"""Full-integer int8 TFLite from the saved model onnx2tf wrote, calibrated on representative encoder inputs.

TensorFlow's `TFLiteConverter.from_saved_model` with a representative dataset, int8 input and output and
`TFLITE_BUILTINS_INT8` only, so an op that cannot be quantized fails the conversion instead of staying float.
On the prototype encoder onnx2tf's own `-oiqt` path (the same converter underneath, fed a .npy) gave the same
fidelity to five digits; this one takes the calibration inputs straight from memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["QuantizationError", "QuantizedModel", "quantize_saved_model", "tensor_quantization"]

log = logging.getLogger(__name__)


class QuantizationError(RuntimeError):
    """The converter failed or produced a model that is not the expected int8 encoder."""


@dataclass(frozen=True)
class QuantizedModel:
    data: bytes
    input_quantization: dict[str, Any]
    output_quantization: dict[str, Any]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    calibration_windows: int
    seconds: float
    per_channel: bool


def tensor_quantization(model: bytes | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output details (shape, dtype, scale, zero point) as the LiteRT interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = (
        Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=str(model))
    )
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {
            "shape": tuple(int(v) for v in detail["shape"]),
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    return describe(inp), describe(out)


def quantize_saved_model(
    saved_model_dir: Path,
    calibration_inputs: npt.NDArray[np.float32],
    expected_input_shape: tuple[int, int, int],
    embedding_dim: int,
    per_channel: bool = True,
) -> QuantizedModel:
    """Convert to int8 with int8 input/output; check shapes against the encoder's contract.

    `per_channel=False` gives every weight tensor one scale: each per-channel scale costs 12 bytes in the
    flatbuffer (float32 scale, int64 zero point) for weights and again for biases, 77 KB on the 231k-parameter
    edge_tcn, which per-tensor weights save at some cost in fidelity (verification measures it).
    """
    import tensorflow as tf

    saved_model_dir = Path(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{saved_model_dir}: no saved_model.pb (run `kws-convert tf` first)")
    inputs = np.asarray(calibration_inputs, dtype=np.float32)
    if inputs.ndim != 3 or inputs.shape[1:] != expected_input_shape[1:] or inputs.shape[0] == 0:
        raise QuantizationError(
            f"calibration inputs: expected [N >= 1, {expected_input_shape[1]}, {expected_input_shape[2]}], "
            f"got {inputs.shape}"
        )

    def representative() -> Iterator[list[npt.NDArray[np.float32]]]:
        for row in inputs:
            yield [row[None]]

    started = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # The converter's only switch for this is a private attribute (TF 2.21).
    converter._experimental_disable_per_channel = not per_channel
    try:
        data = converter.convert()
    except Exception as error:  # the converter raises ConverterError and plain RuntimeErrors
        raise QuantizationError(f"int8 conversion of {saved_model_dir} failed: {error}") from error
    seconds = time.perf_counter() - started
    inp, out = tensor_quantization(data)
    expected_output = (1, embedding_dim)
    if inp["shape"] != tuple(expected_input_shape) or out["shape"] != expected_output:
        raise QuantizationError(
            f"the int8 model takes {inp['shape']} and returns {out['shape']}; expected "
            f"{tuple(expected_input_shape)} and {expected_output} (docs/ARCHITECTURE.md)"
        )
    if inp["dtype"] != "int8" or out["dtype"] != "int8":
        raise QuantizationError(f"input/output dtypes are {inp['dtype']}/{out['dtype']}, expected int8/int8")
    log.info(
        "int8 model (%s weights): %d bytes, calibrated on %d windows in %.1f s",
        "per-channel" if per_channel else "per-tensor",
        len(data),
        inputs.shape[0],
        seconds,
    )
    return QuantizedModel(
        data=data,
        input_quantization={"scale": inp["scale"], "zero_point": inp["zero_point"]},
        output_quantization={"scale": out["scale"], "zero_point": out["zero_point"]},
        input_shape=inp["shape"],
        output_shape=out["shape"],
        calibration_windows=int(inputs.shape[0]),
        seconds=seconds,
        per_channel=per_channel,
    )
