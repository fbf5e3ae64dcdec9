"""What `make pi-test` compares between the emulated arm64 board and this machine: detections, and each
machine's int8 embeddings against the float graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# LiteRT's arm64 and x86-64 int8 kernels round differently, so the two machines are not bit-identical, and two
# int8 kernel sets can sit further from each other than either sits from float: on the issue-13 model's 40
# demo windows, x86 XNNPACK and LiteRT's reference kernels each reach mean cosine 0.992 to the float graph, yet
# only 0.990 (min 0.973) to each other; emulated arm64 against x86 measured 0.989 (min 0.966) while each
# reached 0.992 to float (arm64 0.99182, x86 0.99188; min 0.980 / 0.979). So each machine is held
# to the float model, the contract `make convert` verifies: every window at least the conversion's minimum
# cosine, and arm64's mean within EMBED_MEAN_SLACK of what this machine reaches on the same windows.
EMBED_MEAN_SLACK = 0.005
# A rounding difference may move a detection by a few evaluation hops, never change which keywords fire or how
# often. With a false-alarm budget the keyword's threshold sits higher on its score's rise (0.67 for the demo's
# "happy", against 0.495 before), where a 1-2 % difference moves the 2-of-3 trigger by up to two hops: measured
# 0.1 and 0.2 s on two of the demo's six detections. The demo's keywords are >= 3 s apart, so 0.3 s cannot pair
# one utterance with another.
DETECTION_TIME_TOLERANCE_S = 0.3 + 1e-6


def detections(path: Path) -> list[tuple[str, float]]:
    found = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "detection":
            found.append((str(event["keyword"]), round(float(event["time_s"]), 3)))
    return found


def same_detections(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Same keywords in the same order, each within DETECTION_TIME_TOLERANCE_S of the other machine's time."""
    return len(a) == len(b) and all(
        ka == kb and abs(ta - tb) <= DETECTION_TIME_TOLERANCE_S
        for (ka, ta), (kb, tb) in zip(a, b, strict=True)
    )


def float_graph_problem(onnx: Path, model: Path) -> str | None:
    """Why `onnx` is not the float graph `model` was converted from (None when it is): `kws-convert` writes the
    checkpoint's sha256 beside the graph (`source.json`) and into the model's sidecar."""
    source, sidecar = onnx.parent / "source.json", model.with_suffix(".json")
    if not onnx.is_file():
        return f"{onnx}: no float ONNX graph to compare with: run `make convert` first"
    try:
        graph_from = json.loads(source.read_text())["checkpoint_sha256"]
        model_from = json.loads(sidecar.read_text())["checkpoint_sha256"]
    except (OSError, ValueError, KeyError) as error:
        return f"{source} / {sidecar}: no checkpoint_sha256 to match the graph with the model ({error})"
    if graph_from != model_from:
        return (
            f"{onnx} comes from checkpoint {graph_from[:12]}..., {model} from {model_from[:12]}...: "
            "convert this model's checkpoint (`make convert CKPT=...`) or pass its graph with --onnx"
        )
    return None


def float_embeddings(onnx: Path, model: Path, windows: np.ndarray) -> np.ndarray:
    """The float graph's L2-normalised embeddings of audio windows, through the board's own front end and the
    int8 model's feature normalisation (its sidecar), run as `make convert`'s verification runs it."""
    from conversion.verify import _onnx_embedder
    from edge.frontend import mfcc
    from edge.model import load_model
    from training.evaluation.embedders import l2_normalise

    features = load_model(model).normalize_features(np.stack([mfcc(window) for window in windows]))
    return l2_normalise(_onnx_embedder(onnx)(features))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from training.evaluation.embedders import l2_normalise

    return np.sum(l2_normalise(a) * l2_normalise(b), axis=1)


def embedding_fidelity(arm: np.ndarray, host: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosines of each machine's int8 embeddings to the float ones, and of the two machines to each other."""
    figures = {}
    for name, cosine in (
        ("arm64_float", _cosine(arm, reference)),
        ("x86_64_float", _cosine(host, reference)),
        ("arm64_x86_64", _cosine(arm, host)),
    ):
        figures[f"embedding_{name}_min_cosine"] = float(cosine.min())
        figures[f"embedding_{name}_mean_cosine"] = float(cosine.mean())
    return figures


def fidelity_failures(figures: dict[str, float]) -> list[str]:
    from conversion.verify import VerifyConfig

    floor = VerifyConfig().min_cosine
    failures = [
        f"{machine} window cosine to float {figures[f'embedding_{machine}_float_min_cosine']:.4f} < {floor}"
        for machine in ("arm64", "x86_64")
        if figures[f"embedding_{machine}_float_min_cosine"] < floor
    ]
    arm_mean, host_mean = (
        figures["embedding_arm64_float_mean_cosine"],
        figures["embedding_x86_64_float_mean_cosine"],
    )
    if arm_mean < host_mean - EMBED_MEAN_SLACK:
        failures.append(
            f"arm64 mean cosine to float {arm_mean:.4f} is more than {EMBED_MEAN_SLACK} below x86_64's {host_mean:.4f}"
        )
    return failures
