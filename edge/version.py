"""The installed udkws version, for what the network services tell their clients (Wyoming info, MQTT devices)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    """`udkws`'s version as installed (a wheel, or `pip install -e .`); "0" in a checkout that is not installed."""
    try:
        return version("udkws")
    except PackageNotFoundError:
        return "0"
