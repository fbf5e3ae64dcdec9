"""Where the speech data lives: an explicit directory, else `KWS_DATA_DIR`, else `<repo>/../shared/data`."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MANIFEST_NAME", "OFFICIAL_SOURCES", "REPO_ROOT", "cache_dir", "kws_data_dir"]

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_NAME = "manifest.csv"
ENV_VAR = "KWS_DATA_DIR"

# Where each corpus of ../shared/data can be downloaded when that folder is absent.
OFFICIAL_SOURCES: dict[str, str] = {
    "Speech Commands v0.02 (gsc_v2_test, gsc_noise)": (
        "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz "
        "and http://download.tensorflow.org/data/speech_commands_test_set_v0.02.tar.gz"
    ),
    "Speech Commands v0.01 (gsc_v1_words)": "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    "Free Spoken Digit Dataset (fsdd)": "https://github.com/Jakobovski/free-spoken-digit-dataset",
    "Arabic Speech Commands (arabic_sc)": "https://github.com/abdulkaderghandoura/arabic-speech-commands-dataset",
    "DSPSpeech-20 (dspspeech20)": "https://github.com/zhongyuchen/DSPSpeech-20",
    "LibriSpeech (OpenSLR 12)": "https://www.openslr.org/12",
}


def _sources_text() -> str:
    return "\n".join(f"  - {name}: {url}" for name, url in OFFICIAL_SOURCES.items())


def kws_data_dir(explicit: str | Path | None = None) -> Path:
    """The speech data directory (it must hold `manifest.csv`).

    Order: `explicit`, then the environment variable KWS_DATA_DIR, then `<repo>/../shared/data`.
    """
    if explicit is not None and str(explicit) != "":
        candidate, origin = Path(explicit), "the directory given"
    elif os.environ.get(ENV_VAR):
        candidate, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        candidate, origin = REPO_ROOT.parent / "shared" / "data", "the default <repo>/../shared/data"
    candidate = candidate.expanduser().resolve()
    if (candidate / MANIFEST_NAME).is_file():
        return candidate
    problem = "does not exist" if not candidate.exists() else f"holds no {MANIFEST_NAME}"
    raise FileNotFoundError(
        f"speech data directory {candidate} ({origin}) {problem}. Pass a directory, set {ENV_VAR}, or "
        f"place the data at {REPO_ROOT.parent / 'shared' / 'data'}. The corpora are public:\n{_sources_text()}"
    )


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Root of generated caches (git-ignored): `explicit`, else env KWS_CACHE_DIR, else `<repo>/cache`."""
    if explicit is not None:
        return Path(explicit)
    configured = os.environ.get("KWS_CACHE_DIR")
    return Path(configured) if configured else REPO_ROOT / "cache"
