"""Writing plots: every PNG the project makes goes through here, so none is ever left half-written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(figure: Any, path: Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure to `path` by a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        figure.savefig(temporary, dpi=dpi)
    finally:
        plt.close(figure)
    os.replace(temporary, path)
    return path
