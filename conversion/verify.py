"""Checks of a converted int8 model against its float checkpoint; any failed check fails the build.

- fidelity: cosine between float (PyTorch) and int8 (LiteRT through `edge.model`) embeddings of held-out
  windows (validation splits of the training corpora, never the calibration clips);
- no collapse: same-word pairs of int8 embeddings must score clearly above different-word pairs;
- task: the protocol's 5-shot EER (`training.evaluation`, on `gsc_v2_test`: evaluation only) of the int8
  model within `max_eer_delta_points` of the float model's;
- ops: read from the flatbuffer, every operator a built-in whose tensors are all integer;
- size: at most `max_model_bytes`;
- runtimes: ai-edge-litert (via `edge.model`), and optionally tflite-runtime in another interpreter (reported,
  not required: the board installs ai-edge-litert).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data.manifest import COMMAND_WORDS
from training.export import ModelSource

__all__ = ["VerifyConfig", "collapse_figures", "heldout_windows", "op_report", "verify_model"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
HELDOUT_DATASETS = ("arabic_sc", "gsc_v1_words")
HELDOUT_SPLITS = frozenset({"val", "validation"})
HELDOUT_TAKES_PER_WORD = 4
INTEGER_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL"})


@dataclass(frozen=True)
class VerifyConfig:
    min_mean_cosine: float = 0.99
    min_cosine: float = 0.95
    # Same-word minus different-word mean cosine of int8 embeddings must exceed this.
    collapse_margin: float = 0.05
    max_eer_delta_points: float = 0.5
    max_model_bytes: int = 300_000
    heldout_windows: int = 240
    heldout_seed: int = 0
    eer_check: bool = True
    eer_shots: int = 5
    eer_seeds: tuple[int, ...] = (0, 1, 2)
    # None = the whole benchmark; a number subsamples it (quick checks only, marked as such).
    eer_max_clips_per_word: int | None = None
    tflite_runtime_python: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "eer_seeds", tuple(int(seed) for seed in self.eer_seeds))
        if not 0.0 < self.min_cosine <= self.min_mean_cosine <= 1.0:
            raise ValueError("VerifyConfig: need 0 < min_cosine <= min_mean_cosine <= 1")
        if self.heldout_windows < 4 or self.max_model_bytes <= 0 or self.eer_shots < 1:
            raise ValueError("VerifyConfig: heldout_windows >= 4, max_model_bytes > 0, eer_shots >= 1")


def heldout_windows(
    window_seconds: float, count: int, seed: int = 0, data_dir: Path | None = None
) -> tuple[FloatArray, list[str]]:
    """Validation-split windows of the training corpora, 4 takes per word in turn: audio [N, L] and labels."""
    from training.data.dataset import training_clips
    from training.data.paths import kws_data_dir
    from training.data.windows import load_window

    root = kws_data_dir(data_dir)
    clips = [
        clip
        for clip in training_clips([root], datasets=list(HELDOUT_DATASETS))
        if clip.split in HELDOUT_SPLITS and clip.word.strip().lower() not in COMMAND_WORDS
    ]
    if not clips:
        raise ValueError(f"{root}: no validation-split clips of {HELDOUT_DATASETS} for the fidelity check")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Any]] = {}
    for index in rng.permutation(len(clips)):
        by_label.setdefault(clips[index].label, []).append(clips[index])
    picked: list[Any] = []
    # Takes of a word come in groups, so even a small selection has same-word pairs for the collapse check.
    labels = sorted(by_label)
    while len(picked) < count and any(by_label.values()):
        for index in rng.permutation(len(labels)):
            pool = by_label[labels[index]]
            take = min(HELDOUT_TAKES_PER_WORD, len(pool), count - len(picked))
            picked.extend(pool.pop() for _ in range(take))
    audio = np.stack([load_window(clip, window_seconds) for clip in picked]).astype(np.float32)
    return audio, [clip.label for clip in picked]


def _l2(vectors: npt.ArrayLike) -> FloatArray:
    array = np.asarray(vectors, dtype=np.float32)
    unit: FloatArray = (array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    return unit


def collapse_figures(embeddings: npt.ArrayLike, labels: Sequence[str]) -> dict[str, float]:
    """Mean cosine of same-label pairs and of different-label pairs (embeddings L2-normalised here)."""
    unit = _l2(embeddings)
    label_array = np.asarray(labels)
    similarity = unit @ unit.T
    upper = np.triu(np.ones(similarity.shape, dtype=bool), k=1)
    same = (label_array[:, None] == label_array[None, :]) & upper
    different = (label_array[:, None] != label_array[None, :]) & upper
    if not same.any() or not different.any():
        raise ValueError("collapse check: need at least one same-word pair and one different-word pair")
    return {
        "same_word_mean_cosine": float(similarity[same].mean()),
        "different_word_mean_cosine": float(similarity[different].mean()),
        "same_word_pairs": int(same.sum()),
        "different_word_pairs": int(different.sum()),
    }


def op_report(model: bytes) -> dict[str, Any]:
    """Every operator of the flatbuffer with the types of its tensors; which ones are not integer built-ins."""
    from tensorflow.lite.python import schema_py_generated as schema

    op_names = {
        value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")
    }
    type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    parsed = schema.Model.GetRootAsModel(model, 0)
    codes = []
    for index in range(parsed.OperatorCodesLength()):
        code = parsed.OperatorCodes(index)
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        custom = code.CustomCode()
        codes.append(f"CUSTOM:{custom.decode()}" if custom else op_names.get(builtin, f"BUILTIN_{builtin}"))
    counts: dict[str, int] = {}
    offenders: list[str] = []
    for sub_index in range(parsed.SubgraphsLength()):
        subgraph = parsed.Subgraphs(sub_index)
        for op_index in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(op_index)
            name = codes[operator.OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
            tensors = [int(t) for t in operator.InputsAsNumpy()] + [int(t) for t in operator.OutputsAsNumpy()]
            types = sorted(
                {type_names.get(subgraph.Tensors(t).Type(), "?") for t in tensors if t >= 0} - INTEGER_TYPES
            )
            if name.startswith("CUSTOM:") or types:
                offenders.append(f"{name} (op {op_index}: {', '.join(types) or 'custom op'})")
    return {"ops": dict(sorted(counts.items())), "non_integer_ops": offenders}


def _feature_embedder(name: str, window_seconds: float, embed: Any) -> Any:
    """An `Embedder` for `training.evaluation` whose 'audio' rows are normalised features (MFCC computed once)."""

    @dataclass
    class _Features:
        name: str
        window_seconds: float

        def embed(self, rows: FloatArray) -> FloatArray:
            return np.asarray(embed(rows), dtype=np.float32)

    return _Features(name, window_seconds)


def _onnx_embedder(onnx_path: Path) -> Any:
    """Float embeddings through onnxruntime: the exported graph, equal to torch within 1e-4 (checked at
    export), and much faster than torch's grouped Conv1d on this CPU for the 4,890 benchmark windows."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def embed(rows: FloatArray) -> FloatArray:
        return np.concatenate([session.run(None, {name: row[None]})[0] for row in rows]).astype(np.float32)

    return embed


def eer_figures(
    source: ModelSource,
    encoder: Any,
    config: VerifyConfig,
    data_dir: Path | None,
    float_onnx: Path | None = None,
) -> dict[str, Any]:
    """5-shot EER (in %) of the float and int8 models on the same benchmark clips and enrollment draws."""
    from edge.frontend import mfcc
    from training.evaluation.protocol import EmbeddingScorer, load_benchmark, load_windows, run_protocol

    eval_set, paths = load_benchmark(data_dir, config.eer_max_clips_per_word)
    audio = load_windows(paths, source.window_seconds, progress=True)
    features = source.normalise(np.stack([mfcc(window) for window in audio]))
    figures: dict[str, Any] = {
        "clips": len(paths),
        "subsampled": config.eer_max_clips_per_word is not None,
        "float_runtime": "onnxruntime (exported ONNX)" if float_onnx else "torch",
    }
    for kind, embed in (
        ("float", _onnx_embedder(float_onnx) if float_onnx else source.embed_features),
        ("int8", lambda rows: encoder.embed_features(rows, normalized=True)),
    ):
        scorer = EmbeddingScorer(_feature_embedder(kind, source.window_seconds, embed))
        result = run_protocol(scorer.prepare(features), eval_set, (config.eer_shots,), config.eer_seeds, kind)
        rows = result.per_seed[config.eer_shots]
        figures[f"{kind}_eer_percent"] = 100.0 * float(np.mean([row["eer"] for row in rows]))
    figures["delta_points"] = figures["int8_eer_percent"] - figures["float_eer_percent"]
    return figures


_TFLITE_RUNTIME_SCRIPT = """
import json, sys, numpy as np
from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
x = np.load(sys.argv[2]); outs = []
for row in x:
    it.set_tensor(i["index"], row[None]); it.invoke(); outs.append(it.get_tensor(o["index"])[0].tolist())
import tflite_runtime; print(json.dumps({"version": tflite_runtime.__version__, "outputs": outs}))
"""


def _litert_int8_outputs(model_path: Path, inputs: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for row in inputs:
        interpreter.set_tensor(inp["index"], row[None])
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(out["index"])[0]))
    return np.stack(outputs)


def tflite_runtime_check(
    model_path: Path, python: str, inputs: npt.NDArray[np.int8], reference: Any
) -> dict[str, Any]:
    """Run the model with tflite-runtime in another interpreter; compare its int8 outputs with LiteRT's."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        np.save(Path(scratch) / "x.npy", inputs)
        try:
            done = subprocess.run(
                [python, "-c", _TFLITE_RUNTIME_SCRIPT, str(model_path), str(Path(scratch) / "x.npy")],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except OSError as error:
            return {"runs": False, "python": python, "error": str(error)}
    if done.returncode != 0:
        return {"runs": False, "python": python, "error": done.stderr.strip().splitlines()[-1:]}
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    outputs = np.asarray(answer["outputs"], dtype=np.int32)
    differ = int(np.max(np.abs(outputs - np.asarray(reference, dtype=np.int32))))
    return {"runs": True, "python": python, "version": answer["version"], "max_int8_difference": differ}


def verify_model(
    model_path: Path,
    source: ModelSource,
    config: VerifyConfig = VerifyConfig(),
    data_dir: Path | None = None,
    float_onnx: Path | None = None,
) -> dict[str, Any]:
    """All checks on a model + sidecar pair; returns figures with `passed` and the list of `failures`."""
    from edge.model import load_model

    started = time.perf_counter()
    model_path = Path(model_path)
    model_bytes = model_path.read_bytes()
    failures: list[str] = []
    encoder = load_model(model_path)  # checks sha256, front end, shapes and quantization vs the sidecar

    ops = op_report(model_bytes)
    if ops["non_integer_ops"]:
        failures.append(f"non-integer ops: {'; '.join(ops['non_integer_ops'])}")
    if len(model_bytes) > config.max_model_bytes:
        failures.append(f"model is {len(model_bytes)} bytes, more than {config.max_model_bytes}")

    audio, labels = heldout_windows(
        source.window_seconds, config.heldout_windows, config.heldout_seed, data_dir
    )
    int8 = encoder.embed_windows(audio)
    from edge.frontend import mfcc

    float_embeddings = _l2(source.embed_features(source.normalise(np.stack([mfcc(w) for w in audio]))))
    cosines = np.sum(int8 * float_embeddings, axis=1)
    fidelity = {
        "windows": len(labels),
        "words": len(set(labels)),
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
    }
    if fidelity["mean_cosine"] < config.min_mean_cosine:
        failures.append(f"mean float/int8 cosine {fidelity['mean_cosine']:.4f} < {config.min_mean_cosine}")
    if fidelity["min_cosine"] < config.min_cosine:
        failures.append(f"min float/int8 cosine {fidelity['min_cosine']:.4f} < {config.min_cosine}")

    collapse: dict[str, Any] = {
        "int8": collapse_figures(int8, labels),
        "float": collapse_figures(float_embeddings, labels),
    }
    gap = collapse["int8"]["same_word_mean_cosine"] - collapse["int8"]["different_word_mean_cosine"]
    collapse["int8_gap"] = gap
    if gap <= config.collapse_margin:
        failures.append(
            f"int8 same-word minus different-word mean cosine {gap:.3f} <= {config.collapse_margin}"
        )

    task: dict[str, Any] = {"checked": False}
    if config.eer_check:
        task = {
            "checked": True,
            "shots": config.eer_shots,
            **eer_figures(source, encoder, config, data_dir, float_onnx),
        }
        if abs(task["delta_points"]) > config.max_eer_delta_points:
            failures.append(
                f"{config.eer_shots}-shot EER int8 {task['int8_eer_percent']:.2f} % vs float "
                f"{task['float_eer_percent']:.2f} %: differs by more than {config.max_eer_delta_points} points"
            )

    runtimes: dict[str, Any] = {"ai_edge_litert": {"runs": True}}
    if config.tflite_runtime_python:
        quant = encoder.sidecar.input_quantization
        normalised = source.normalise(np.stack([mfcc(w) for w in audio[:8]]))
        q_inputs = np.clip(np.round(normalised / quant.scale) + quant.zero_point, -128, 127).astype(np.int8)
        reference = _litert_int8_outputs(model_path, q_inputs)
        runtimes["tflite_runtime"] = tflite_runtime_check(
            model_path, config.tflite_runtime_python, q_inputs, reference
        )

    return {
        "passed": not failures,
        "failures": failures,
        "model_bytes": len(model_bytes),
        "fidelity": fidelity,
        "collapse": collapse,
        "task": task,
        "ops": ops,
        "runtimes": runtimes,
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 1),
    }
