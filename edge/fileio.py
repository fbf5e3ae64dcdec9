"""File helpers shared by every layer: content hashes and atomic writes that keep the previous copy."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_rename", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "file_sha256"]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_failed(path: Path, error: OSError) -> OSError:
    """A write error that names the file (ENOSPC alone says neither which file nor what survived)."""
    return OSError(
        error.errno,
        f"{path}: could not write it ({error.strerror or error}); the previous version is unchanged",
    )


def _write_then_rename(path: Path, data: bytes) -> None:
    try:
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _write_failed(path, error) from error
    try:
        with os.fdopen(descriptor, "wb") as handle:
            # mkstemp makes the file 0600; a model or template must stay readable by the service user.
            os.fchmod(handle.fileno(), _default_file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_failed(path, error) from error
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, keep_previous_as: str | None = None) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename, fsync the folder).

    With `keep_previous_as` (a suffix such as ".bak"), the current file is first copied to `<path><suffix>` the
    same way, so the new and the previous version are complete files at every moment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous_as and path.is_file():
        _write_then_rename(path.with_name(path.name + keep_previous_as), path.read_bytes())
    _write_then_rename(path, data)


def atomic_rename(source: str | Path, target: str | Path) -> None:
    """`os.replace` made durable: the folder is fsynced, so a power cut cannot bring the old name back."""
    os.replace(source, target)
    _fsync_dir(Path(target).parent)


def atomic_write_text(path: str | Path, text: str, keep_previous_as: str | None = None) -> None:
    """`atomic_write_bytes` of `text` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), keep_previous_as)


def atomic_write_json(path: str | Path, value: Any, keep_previous_as: str | None = None) -> None:
    """`atomic_write_bytes` of `value` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(value, indent=2) + "\n", keep_previous_as)
