"""`make pi-test`: the board side on an emulated arm64 Debian bookworm (Raspberry Pi OS's base).

1. Builds (once, cached under .pi-root/) a Debian bookworm arm64 root file system with debootstrap and runs
   it through qemu-user-static's binfmt handler.
2. Runs the board's own install script (edge/deploy/install.sh) inside it: the edge wheel with numpy and
   ai-edge-litert from PyPI's aarch64 wheels, no torch, no TensorFlow.
3. Enrolls the demo keyword and replays the demo stream with mock GPIO on arm64 and on this machine, and
   computes `kws-edge embed` embeddings of the same windows on both: detections must match (same keywords
   at nearly the same times) and arm64's embeddings must be as faithful to the float model (the exported
   ONNX graph, on this machine) as this machine's are.

The emulated inference time it prints is a correctness by-product: emulation speed says nothing about a
real board.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pi_compare import (
    detections,
    embedding_fidelity,
    fidelity_failures,
    float_embeddings,
    float_graph_problem,
    same_detections,
)

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = os.environ.get("PI_TEST_MIRROR", "http://deb.debian.org/debian")
ROOTFS_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
STAGE = "/tmp/udkws-stage"
log = logging.getLogger("pi-test")


class PiTestError(RuntimeError):
    pass


def _run(cmd: list[str], timeout: float, what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    log.info("$ %s", " ".join(cmd))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as error:
        raise PiTestError(f"{what}: timed out after {timeout:.0f} s: {' '.join(cmd)}") from error
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise PiTestError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


def ensure_tools() -> None:
    needed = {
        "debootstrap": "debootstrap",
        "qemu-aarch64-static": "qemu-user-static",
        "update-binfmts": "binfmt-support",
    }
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise PiTestError(f"missing tools: install the Debian packages {' '.join(missing)} (apt-get install)")
    log.info("installing %s", " ".join(missing))
    _run(["apt-get", "update", "-qq"], 600, "apt-get update")
    _run(
        ["apt-get", "install", "-y", "-qq", *missing],
        900,
        f"apt-get install {' '.join(missing)}",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    still = [tool for tool in needed if shutil.which(tool) is None]
    if still:
        raise PiTestError(f"still missing after apt-get: {still}; install {' '.join(missing)}")


def ensure_binfmt(root: Path) -> None:
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists():
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False
            )
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False, capture_output=True)
    if not handler.exists():
        raise PiTestError(
            "no binfmt handler for aarch64: install qemu-user-static and binfmt-support, and make sure "
            "binfmt_misc can be mounted (a privileged container or the host)"
        )
    if root.exists():
        probe = subprocess.run(["chroot", str(root), "/bin/true"], capture_output=True, timeout=60)
        if probe.returncode != 0:
            raise PiTestError(f"cannot run arm64 binaries in {root}: {probe.stderr.decode(errors='replace')}")


def ensure_rootfs(cache: Path) -> Path:
    """A pristine root file system, unpacked afresh each run from a cached tarball built by debootstrap."""
    tarball = cache / f"{SUITE}-arm64.tar"
    if not tarball.exists():
        partial = cache / f"{SUITE}-arm64.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log.info("debootstrap %s arm64 into %s (a few minutes, once)", SUITE, partial)
        try:
            _run(
                [
                    "debootstrap",
                    "--arch=arm64",
                    "--variant=minbase",
                    f"--include={ROOTFS_PACKAGES}",
                    SUITE,
                    str(partial),
                    MIRROR,
                ],
                1800,
                f"debootstrap (package: debootstrap; mirror: {MIRROR})",
            )
        except PiTestError:
            log_file = partial / "debootstrap" / "debootstrap.log"
            if log_file.exists():
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
                log.error("debootstrap log tail:\n%s", tail)
            raise
        _run(["tar", "-C", str(partial), "-cf", f"{tarball}.tmp", "."], 600, "tar of the root file system")
        os.replace(f"{tarball}.tmp", tarball)
        shutil.rmtree(partial, ignore_errors=True)
        log.info("root file system cached in %s after %.0f s", tarball, time.monotonic() - started)
    root = cache / "run-root"
    _unmount_all(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _run(["tar", "-C", str(root), "-xf", str(tarball)], 600, "unpacking the root file system")
    return root


def _unmount_all(root: Path) -> None:
    for sub in ("sys", "proc"):
        if os.path.ismount(root / sub):
            subprocess.run(["umount", "-l", str(root / sub)], check=False)


class Chroot:
    """Mounts /proc and copies the host's resolver and CA bundle (TLS-intercepting proxies) for pip."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> Chroot:
        shutil.copy("/etc/resolv.conf", self.root / "etc/resolv.conf")
        host_ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
        if host_ca.is_file():
            shutil.copy(host_ca, self.root / "etc/ssl/certs/ca-certificates.crt")
        # Only /proc: with the host's /sys visible, LiteRT's CPU probe reads x86 topology and picks kernels
        # that crash under qemu-user (seen here); without it the probe warns and falls back safely.
        if not os.path.ismount(self.root / "proc"):
            subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        _unmount_all(self.root)

    def run(self, script: str, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "GPIOZERO_PIN_FACTORY": "mock",
            "OMP_NUM_THREADS": "1",
        }
        return _run(
            ["chroot", str(self.root), "/bin/bash", "-euo", "pipefail", "-c", script], timeout, what, env=env
        )


def stage_files(root: Path, model: Path, work: Path) -> dict[str, str]:
    """Build the wheel and copy what the board gets, plus the demo inputs, into the emulated root."""
    from edge.audio import load_audio, write_wav

    stage = root / STAGE.lstrip("/")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(stage), str(REPO)],
        600,
        "pip wheel",
    )
    shutil.copy(model, stage / "udkws_int8.tflite")
    shutil.copy(model.with_suffix(".json"), stage / "udkws_int8.json")
    shutil.copy(REPO / "edge/systemd/udkws.service", stage)
    shutil.copy(REPO / "edge/default_config.toml", stage / "config.toml")
    shutil.copy(REPO / "edge/deploy/install.sh", stage)
    demo = REPO / "edge/demo"
    # The board needs no FLAC reader: hand it 16-bit WAV.
    write_wav(stage / "stream.wav", load_audio(demo / "stream.flac"))
    takes = sorted(demo.glob("enroll_*.wav"))
    for take in takes:
        shutil.copy(take, stage / take.name)
    truth = json.loads((demo / "stream_truth.json").read_text())
    keyword = str(truth.get("keyword") or truth["events"][0]["keyword"])
    stream = load_audio(demo / "stream.flac")
    sidecar = json.loads(model.with_suffix(".json").read_text())
    length = int(sidecar["window_samples"])
    starts = np.arange(0, stream.shape[0] - length, 8000)[:40]
    windows = np.stack([stream[s : s + length] for s in starts]).astype(np.float32)
    np.save(stage / "windows.npy", windows)
    np.save(work / "windows.npy", windows)
    return {"keyword": keyword, "takes": " ".join(f"{STAGE}/{t.name}" for t in takes)}


def edge_commands(kws: str, model: str, state: str, stage: str, keyword: str, takes: str, out: str) -> str:
    return (
        f"rm -rf {state} && mkdir -p {state} {out}\n"
        # Take checks are the enrollment tests' business; here both machines must simply see the same takes.
        f"{kws} enroll --no-checks --model {model} --state-dir {state} {keyword} {takes}\n"
        f"start=$(date +%s.%N)\n"
        f"{kws} replay --model {model} --state-dir {state} --json {stage}/stream.wav > {out}/replay.jsonl\n"
        f"end=$(date +%s.%N)\n"
        f'echo "$start $end" > {out}/replay_time.txt\n'
        f"{kws} embed --model {model} --input {stage}/windows.npy --output {out}/embeddings.npy\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pi-test", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, default=REPO / "build/udkws_int8.tflite", help="int8 model with its sidecar"
    )
    parser.add_argument(
        "--cache", type=Path, default=REPO / ".pi-root", help="where the root file system is cached"
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        default=REPO / "build/convert/udkws.onnx",
        help="the float graph the model came from",
    )
    parser.add_argument("--work", type=Path, default=REPO / "build/pi-test", help="results of both runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        if not args.model.is_file() or not args.model.with_suffix(".json").is_file():
            raise PiTestError(f"{args.model}: no int8 model with its .json sidecar: run `make convert` first")
        graph_problem = float_graph_problem(args.onnx, args.model)
        if graph_problem:
            raise PiTestError(graph_problem)
        if os.geteuid() != 0:
            raise PiTestError("pi-test needs root (chroot, mount, binfmt): run it as root")
        ensure_tools()
        ensure_binfmt(Path("/nonexistent"))
        root = ensure_rootfs(args.cache)
        ensure_binfmt(root)
        args.work.mkdir(parents=True, exist_ok=True)
        staged = stage_files(root, args.model, args.work)
        with Chroot(root) as chroot:
            t0 = time.monotonic()
            chroot.run(f"bash {STAGE}/install.sh --from {STAGE} --no-systemctl", 1800, "install.sh on arm64")
            install_s = time.monotonic() - t0
            arch = chroot.run(
                "uname -m; /opt/udkws/venv/bin/python -c 'import numpy, ai_edge_litert; "
                "print(numpy.__version__)'; /opt/udkws/venv/bin/pip list 2>/dev/null | "
                "grep -i -E '^(torch|tensorflow) ' || true",
                300,
                "arm64 venv check",
            ).stdout
            if "torch" in arch.lower() or "tensorflow" in arch.lower():
                raise PiTestError(f"the board venv holds torch or TensorFlow:\n{arch}")
            t0 = time.monotonic()
            chroot.run(
                edge_commands(
                    "/opt/udkws/venv/bin/kws-edge",
                    "/usr/share/udkws/udkws_int8.tflite",
                    "/tmp/udkws-state",
                    STAGE,
                    staged["keyword"],
                    staged["takes"],
                    "/tmp/udkws-out",
                ),
                1800,
                "kws-edge on arm64",
            )
            emulated_s = time.monotonic() - t0
            arm_out = args.work / "arm64"
            shutil.rmtree(arm_out, ignore_errors=True)
            shutil.copytree(root / "tmp/udkws-out", arm_out)
        host_out = args.work / "x86_64"
        stage = root / STAGE.lstrip("/")
        _run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                edge_commands(
                    str(REPO / ".venv/bin/kws-edge"),
                    str(args.model),
                    str(args.work / "state-x86"),
                    str(stage),
                    staged["keyword"],
                    " ".join(str(stage / Path(t).name) for t in staged["takes"].split()),
                    str(host_out),
                ),
            ],
            900,
            "kws-edge on x86_64",
            env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
        )
        arm_det, host_det = detections(arm_out / "replay.jsonl"), detections(host_out / "replay.jsonl")
        arm_emb, host_emb = np.load(arm_out / "embeddings.npy"), np.load(host_out / "embeddings.npy")
        reference = float_embeddings(args.onnx, args.model, np.load(args.work / "windows.npy"))
        fidelity = embedding_fidelity(arm_emb, host_emb, reference)
        windows = int(arm_emb.shape[0])
        replay_times = [float(x) for x in (arm_out / "replay_time.txt").read_text().split()]
        replay_summary = [
            json.loads(line)
            for line in (arm_out / "replay.jsonl").read_text().splitlines()
            if '"summary"' in line
        ]
        encoded = (
            max(1, int(replay_summary[-1]["windows"]) - int(replay_summary[-1].get("windows_gated", 0)))
            if replay_summary
            else 1
        )
        summary = {
            "keyword": staged["keyword"],
            "detections_arm64": arm_det,
            "detections_x86_64": host_det,
            "detections_match": same_detections(arm_det, host_det),
            "embeddings": windows,
            **fidelity,
            "install_s": round(install_s, 1),
            "emulated_edge_commands_s": round(emulated_s, 1),
            "emulated_replay_s": round(replay_times[1] - replay_times[0], 1),
            # A correctness by-product only: qemu-user speed says nothing about a real board.
            "emulated_ms_per_encoded_window": round(1000 * (replay_times[1] - replay_times[0]) / encoded, 1),
            "total_s": round(time.monotonic() - started, 1),
        }
        (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        if not arm_det:
            raise PiTestError("no detection on arm64: the demo keyword should be found")
        if not summary["detections_match"]:
            raise PiTestError(f"detections differ: arm64 {arm_det} vs x86_64 {host_det}")
        failures = fidelity_failures(fidelity)
        if failures:
            raise PiTestError("embeddings: " + "; ".join(failures))
        print(f"pi-test passed in {summary['total_s']} s")
        return 0
    except PiTestError as error:
        log.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
