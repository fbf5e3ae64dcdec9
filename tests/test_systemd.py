"""The systemd unit: `systemd-analyze verify` and `security`, its hardening, and W^X under the real runtime."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.config import DEFAULT_CONFIG_PATH
from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "edge" / "systemd" / "udkws.service"
INSTALL = REPO / "edge" / "deploy" / "install.sh"
EXEC = "/opt/udkws/venv/bin/kws-edge"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt-get install systemd)"
)


def directives(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of the [Service] section; repeated keys keep every value, in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_with_exec(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart binary exists here (verify checks that it does)."""
    binary = tmp_path / "bin" / "kws-edge"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "udkws.service"
    unit.write_text((text or UNIT.read_text()).replace(EXEC, str(binary)))
    return unit


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_with_exec(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"verify warned: {result.stderr}"


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSec=30s\nRestartt=always")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_with_exec(tmp_path, broken))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Restartt" in result.stderr


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_safe(tmp_path: Path) -> None:
    # --offline reads the unit file itself: no running systemd is needed (PID 1 here is not systemd).
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_with_exec(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for udkws\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout[-2000:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=yes: exposure {exposure} {match.group(2)}")
    assert exposure <= 1.0 and match.group(2) == "SAFE"
    # What remains open is what the daemon needs (see docs/board.md): sound and GPIO devices, the audio and
    # gpio groups, AF_UNIX for sd_notify, /proc/cpuinfo for XNNPACK's CPU detection.
    failed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    assert failed <= {
        "RootDirectory=/RootImage=", "SupplementaryGroups=", "PrivateDevices=", "RestrictAddressFamilies=~AF_UNIX",
        "ProcSubset=", "PrivateUsers=", "DeviceAllow=",
    }, failed  # fmt: skip


def test_unit_has_the_required_settings() -> None:
    found = directives(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "User": ["udkws"],
        "SupplementaryGroups": ["audio gpio"],
        "StateDirectory": ["udkws"],
        "ConfigurationDirectory": ["udkws"],
        "PrivateNetwork": ["yes"],
        "IPAddressDeny": ["any"],
        "RestrictAddressFamilies": ["AF_UNIX"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "DevicePolicy": ["closed"],
        "DeviceAllow": ["char-alsa rw", "char-gpiochip rw", "/dev/gpiomem rw"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "ProtectKernelLogs": ["yes"],
        "MemoryDenyWriteExecute": ["yes"],
        "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "WorkingDirectory": ["/var/lib/udkws"],
    }
    for key, values in expected.items():
        assert found.get(key) == values, f"{key}: {found.get(key)} != {values}"
    watchdog = found["WatchdogSec"][0]
    assert re.fullmatch(r"\d+s", watchdog) and 5 <= int(watchdog[:-1]) <= 120
    assert found["ExecStart"] == [f"{EXEC} run --config {DEFAULT_CONFIG_PATH}"]


def test_unit_paths_agree_with_the_config_and_the_installer() -> None:
    defaults = tomllib.loads((REPO / "edge" / "default_config.toml").read_text())
    assert defaults["state"]["dir"] == "/var/lib/" + directives(UNIT.read_text())["StateDirectory"][0]
    model_dir = str(Path(defaults["model"]["path"]).parent)
    script = INSTALL.read_text()
    assert f'MODEL_DIR="$ROOT{model_dir}"' in script
    assert f'VENV="$ROOT{EXEC.removesuffix("/bin/kws-edge")}"' in script
    assert f'CONFIG_DIR="$ROOT{DEFAULT_CONFIG_PATH.parent}"' in script


_MDWE_PROBE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory was allowed: the probe is not enforcing anything")
except OSError:
    pass
import numpy as np
from edge.model import load_model
encoder = load_model(sys.argv[1])
audio = np.random.default_rng(0).normal(scale=0.1, size=(2, encoder.window_samples)).astype(np.float32)
assert encoder.embed_windows(audio).shape == (2, encoder.embedding_dim)
import gpiozero, pyaudio
from gpiozero.pins.mock import MockFactory
gpiozero.Device.pin_factory = MockFactory()
gpiozero.LED(17).blink(0.01, 0.01, n=2, background=False)
pyaudio.PyAudio().terminate()
print("W^X OK")
"""


def test_memory_deny_write_execute_holds_for_the_runtime(random_model_path: Path) -> None:  # noqa: F811
    """MemoryDenyWriteExecute=yes is only safe if nothing the daemon loads needs W+X memory: check it.

    The kernel's PR_SET_MDWE (Linux >= 6.3) refuses the same mappings as systemd's filter; under it this
    loads numpy, LiteRT with XNNPACK (runs the model), gpiozero and PyAudio (initialises PortAudio/ALSA).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3): cannot check W^X here")
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE, str(random_model_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "W^X OK" in result.stdout


# The network drop-in: [wyoming] / [mqtt] on (edge/systemd/udkws-network.conf, rendered by `kws-edge network-dropin`).


def _dropin_for(tmp_path: Path, toml: str, force: bool = False) -> str | None:
    from edge.config import load_config
    from edge.network_cli import render_dropin

    path = tmp_path / "config.toml"
    path.write_text(toml)
    return render_dropin(load_config(path), force=force)


NETWORKED = '[wyoming]\nenabled = true\n[mqtt]\nenabled = true\nhost = "203.0.113.7"\n'


@needs_analyze
def test_networked_unit_verifies_and_stays_under_2_5(tmp_path: Path) -> None:
    dropin = _dropin_for(tmp_path, NETWORKED)
    assert dropin is not None
    unit = unit_with_exec(tmp_path)
    (tmp_path / "udkws.service.d").mkdir()
    (tmp_path / "udkws.service.d" / "network.conf").write_text(dropin)  # found beside the unit, as in /etc
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for udkws\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout[-2000:]
    print(f"systemd-analyze security --offline=yes, with the network drop-in: exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.5
    failed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    assert "PrivateNetwork=" in failed and "RestrictAddressFamilies=~AF_(INET|INET6)" in failed  # it counted


def test_network_dropin_opens_only_what_the_config_needs(tmp_path: Path) -> None:
    assert _dropin_for(tmp_path, "") is None  # both off: no network, no drop-in
    networked = _dropin_for(tmp_path, NETWORKED)
    assert networked is not None
    found = directives(UNIT.read_text() + networked)
    assert found["PrivateNetwork"][-1] == "no" and found["IPAddressDeny"] == ["any"]
    assert found["RestrictAddressFamilies"][-2:] == ["", "AF_UNIX AF_INET AF_INET6"]
    assert found["IPAddressAllow"] == [
        "localhost link-local multicast 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7 203.0.113.7"
    ]
    assert found["SocketBindAllow"] == ["tcp:10400"] and found["SocketBindDeny"] == ["any"]
    mqtt_only = directives(
        _dropin_for(
            tmp_path, '[mqtt]\nenabled = true\nhost = "192.168.1.20"\n[network]\nallow = ["192.168.1.0/24"]\n'
        )
        or ""
    )
    assert mqtt_only["IPAddressAllow"] == ["192.168.1.0/24"]  # the broker is inside: not repeated
    assert "SocketBindAllow" not in mqtt_only and mqtt_only["SocketBindDeny"] == ["any"]  # listens nowhere
    unix = directives(
        _dropin_for(tmp_path, '[wyoming]\nenabled = true\nuri = "unix:///run/udkws/wake.sock"\n') or ""
    )
    assert "SocketBindAllow" not in unix and unix["SocketBindDeny"] == ["any"]
    forced = _dropin_for(tmp_path, "", force=True)
    assert forced is not None and "IPAddressAllow=localhost" in forced


def test_install_writes_and_removes_the_network_dropin(tmp_path: Path, random_model_path: Path) -> None:  # noqa: F811
    """install.sh in a staged root, its venv stood in for by this checkout: the drop-in follows the config."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "udkws-0-py3-none-any.whl").write_text("")  # --no-venv: not installed
    for name in ("udkws_int8.tflite", "udkws_int8.json"):
        (bundle / name).write_bytes((random_model_path.parent / name).read_bytes())
    (bundle / "udkws.service").write_text(UNIT.read_text())
    root = tmp_path / "root"
    shim = root / EXEC.lstrip("/")
    shim.parent.mkdir(parents=True)
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m edge.cli "$@"\n')
    shim.chmod(0o755)
    dropin = root / "etc/systemd/system/udkws.service.d/network.conf"

    def install(config_text: str) -> str:
        (bundle / "config.toml").write_text(config_text)
        (root / "etc/udkws/config.toml").unlink(missing_ok=True)  # take the new config, not the kept one
        result = subprocess.run(
            ["bash", str(INSTALL), "--from", str(bundle), "--root", str(root), "--no-apt", "--no-useradd",
             "--no-systemctl", "--no-venv"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "network drop-in written" in install(NETWORKED)
    assert "SocketBindAllow=tcp:10400" in dropin.read_text() and oct(dropin.stat().st_mode)[-3:] == "644"
    assert "network drop-in removed" in install((REPO / "edge" / "default_config.toml").read_text())
    assert not dropin.exists()
