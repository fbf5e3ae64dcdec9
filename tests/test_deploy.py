"""Deployment: install.sh run for real into a staged root, and deploy.sh's scp/ssh commands in DRY_RUN mode.

The staged install is a real `pip install 'udkws[edge]'` of a wheel built from this checkout into a fresh
venv, offline from cache/wheelhouse (filled once per machine with `pip wheel` of the edge dependencies).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "edge" / "deploy" / "install.sh"
DEPLOY = REPO / "edge" / "deploy" / "deploy.sh"
UNIT = REPO / "edge" / "systemd" / "udkws.service"
DEFAULT_CONFIG = REPO / "edge" / "default_config.toml"
WHEELHOUSE = REPO / "cache" / "wheelhouse"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dry_run_commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


@pytest.fixture(scope="session")
def edge_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` of this checkout, as `make deploy` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        # --no-build-isolation: the venv's setuptools builds it (deploy.sh lets pip fetch one; same wheel, faster).
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("udkws-*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheelhouse(edge_wheel: Path) -> Path:
    """Wheels of every dependency of `udkws[edge]` for this interpreter, so the install runs offline."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["edge"]
    key = hashlib.sha256("\n".join(extra).encode()).hexdigest()[:12]
    marker = WHEELHOUSE / f".complete-py{sys.version_info.major}{sys.version_info.minor}-{key}"
    if not marker.is_file():
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(WHEELHOUSE),
                f"{edge_wheel}[edge]",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot fetch the edge dependencies' wheels (offline?): {result.stderr[-500:]}")
        for stale in WHEELHOUSE.glob("udkws-*.whl"):
            stale.unlink()
        marker.write_text("\n".join(extra) + "\n")
    return WHEELHOUSE


@pytest.fixture
def bundle(tmp_path: Path, edge_wheel: Path, random_model_path: Path) -> Path:  # noqa: F811
    """The folder `make deploy` copies to the board."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copy(edge_wheel, folder)
    shutil.copy(random_model_path, folder / "udkws_int8.tflite")
    shutil.copy(random_model_path.with_suffix(".json"), folder / "udkws_int8.json")
    shutil.copy(UNIT, folder / "udkws.service")
    shutil.copy(DEFAULT_CONFIG, folder / "config.toml")
    shutil.copy(INSTALL, folder / "install.sh")
    return folder


def install(
    bundle: Path, root: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(bundle / "install.sh"), "--root", str(root), "--python", sys.executable, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_install_into_a_staged_root(bundle: Path, wheelhouse: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    offline = ("--find-links", str(wheelhouse), "--no-index", "--no-apt", "--no-useradd", "--no-systemctl")
    result = install(bundle, root, *offline)
    assert result.returncode == 0, result.stdout + result.stderr

    model_dir = root / "usr/share/udkws"
    for name in ("udkws_int8.tflite", "udkws_int8.json"):
        assert (model_dir / name).read_bytes() == (bundle / name).read_bytes()
        assert mode(model_dir / name) == 0o644
    config = root / "etc/udkws/config.toml"
    assert config.read_text() == DEFAULT_CONFIG.read_text() and mode(config) == 0o644
    unit = root / "etc/systemd/system/udkws.service"
    assert unit.read_text() == UNIT.read_text() and mode(unit) == 0o644
    assert (root / "var/lib/udkws").is_dir() and mode(root / "var/lib/udkws") == 0o750

    venv = root / "opt/udkws/venv"
    helped = subprocess.run(
        [str(venv / "bin/kws-edge"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "enroll" in helped.stdout
    # The installed runtime loads the installed model: the edge extra really is complete.
    info = subprocess.run(
        [str(venv / "bin/kws-edge"), "info", "--model", str(model_dir / "udkws_int8.tflite")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert info.returncode == 0, info.stdout + info.stderr
    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for wanted in ("udkws==", "numpy==", "ai-edge-litert==", "gpiozero==", "pyaudio=="):
        assert wanted in listed, f"{wanted} not installed"
    for unwanted in ("torch", "tensorflow", "onnx"):
        assert unwanted not in listed, f"{unwanted} must not be on the board"

    # A re-install keeps a config the user edited and puts the new default beside it.
    edited = config.read_text().replace("num_threads = 1", "num_threads = 2")
    assert edited != config.read_text()
    config.write_text(edited)
    again = install(bundle, root, *offline, "--no-venv")  # the venv step was checked above; files only now
    assert again.returncode == 0, again.stdout + again.stderr
    assert config.read_text() == edited
    assert (root / "etc/udkws/config.toml.new").read_text() == DEFAULT_CONFIG.read_text()
    assert "keeping your edited" in again.stdout

    # Back to the default: the next install treats it as unedited again and clears the .new file.
    config.write_text(DEFAULT_CONFIG.read_text())
    third = install(bundle, root, *offline, "--no-venv")
    assert third.returncode == 0, third.stdout + third.stderr
    assert not (root / "etc/udkws/config.toml.new").exists()


def test_install_dry_run_prints_everything_and_changes_nothing(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install(bundle, root, env={"DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    assert not root.exists()
    commands = dry_run_commands(result.stdout)
    flat = [" ".join(command) for command in commands]
    venv = f"{root}/opt/udkws/venv"
    assert [sys.executable, "-m", "venv", venv] in commands
    wheel = next(bundle.glob("udkws-*.whl"))
    assert any(
        c[:4] == [f"{venv}/bin/python", "-m", "pip", "install"] and c[-1] == f"{wheel}[edge]"
        for c in commands
    )
    assert [
        "install",
        "-m",
        "0644",
        str(bundle / "udkws_int8.tflite"),
        f"{root}/usr/share/udkws/udkws_int8.tflite",
    ] in commands
    assert [
        "install",
        "-m",
        "0644",
        str(bundle / "udkws.service"),
        f"{root}/etc/systemd/system/udkws.service",
    ] in commands
    assert ["install", "-d", "-m", "0750", f"{root}/var/lib/udkws"] in commands
    assert any(line.startswith("usermod --append --groups audio,gpio udkws") for line in flat)
    assert "systemctl daemon-reload" in flat
    assert "systemctl enable --now udkws" in flat or "systemctl restart udkws" in flat


def test_install_names_a_missing_file(bundle: Path, tmp_path: Path) -> None:
    (bundle / "udkws_int8.json").unlink()
    result = install(bundle, tmp_path / "root", "--no-apt", "--no-useradd", "--no-systemctl")
    assert result.returncode != 0
    assert "udkws_int8.json" in result.stderr and "beside" in result.stderr
    result = install(bundle, tmp_path / "root", "--bogus")
    assert result.returncode == 2 and "unknown option '--bogus'" in result.stderr


def deploy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_deploy_dry_run_prints_the_scp_and_ssh_commands(random_model_path: Path) -> None:  # noqa: F811
    env = {"DRY_RUN": "1", "MODEL": str(random_model_path), "SSH_OPTS": "-o Port=2222", "PYTHON": "python3"}
    result = deploy("pi@raspberrypi.local", env=env)
    assert result.returncode == 0, result.stderr
    commands = dry_run_commands(result.stdout)
    stage = f"{REPO}/build/deploy"
    assert [
        "python3",
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        stage,
        str(REPO),
    ] in commands
    assert ["cp", str(random_model_path), f"{stage}/udkws_int8.tflite"] in commands
    assert ["cp", str(random_model_path.with_suffix(".json")), f"{stage}/udkws_int8.json"] in commands
    assert ["cp", f"{REPO}/edge/default_config.toml", f"{stage}/config.toml"] in commands
    remote = commands[-3:]
    assert remote[0] == [
        "ssh",
        "-o",
        "Port=2222",
        "pi@raspberrypi.local",
        "rm -rf '/tmp/udkws-deploy' && mkdir -p '/tmp/udkws-deploy'",
    ]
    scp = remote[1]
    assert scp[:3] == ["scp", "-o", "Port=2222"] and scp[-1] == "pi@raspberrypi.local:/tmp/udkws-deploy/"
    assert [Path(p).name for p in scp[3:-1]] == [
        "udkws-<version>-py3-none-any.whl", "udkws_int8.tflite", "udkws_int8.json", "udkws.service", "config.toml",
        "install.sh",
    ]  # fmt: skip
    assert remote[2][:5] == ["ssh", "-t", "-o", "Port=2222", "pi@raspberrypi.local"]
    assert remote[2][5].startswith("sudo bash '/tmp/udkws-deploy/install.sh' --from '/tmp/udkws-deploy'")


def test_deploy_refuses_without_a_board_or_a_model(tmp_path: Path, random_model_path: Path) -> None:  # noqa: F811
    result = deploy(env={"DRY_RUN": "1", "MODEL": str(random_model_path), "PI": ""})
    assert result.returncode != 0 and "PI=user@host" in result.stderr
    result = deploy("pi@board", env={"DRY_RUN": "1", "MODEL": str(tmp_path / "none.tflite")})
    assert result.returncode != 0 and "make convert" in result.stderr and "none.tflite" in result.stderr
