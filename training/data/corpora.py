"""The corpus registry: every corpus the project knows, behind one small interface.

A `Corpus` has a name, a default root, the file listing it (a speech `manifest.csv`, or `sounds.csv` for the
rooms and noise set), its role, its licence, the `kws-train data <name>` builder that makes it and a one-line
hint on how to get it. `prepare.corpus_roots` resolves a registered name in `data.extra_roots` /
`data.optional_roots` to its root (`optional_roots = ["kokoro", "speechocean762"]`); `kws-train data stats`
lists every built corpus through it. A new corpus is one entry here plus its builder module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data.manifest import Clip, read_manifest
from training.data.paths import MANIFEST_NAME, REPO_ROOT, kws_data_dir

__all__ = ["CORPORA", "Corpus", "built_corpora", "corpus", "resolve_root"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    name: str
    default_root: str  # relative to the repository, or "" for the shared data dir ($KWS_DATA_DIR)
    role: str  # "speech": word clips in manifest.csv | "sounds": impulse responses and noise in sounds.csv
    license: str
    summary: str
    builder: str = ""  # the `kws-train data <builder>` command that builds it ("" = not built here)
    how_to_get: str = ""
    listing: str = MANIFEST_NAME

    def root(self, override: str | Path | None = None) -> Path:
        if override:
            path = Path(override).expanduser()
            return path if path.is_absolute() else REPO_ROOT / path
        if not self.default_root:
            return kws_data_dir()
        return REPO_ROOT / self.default_root

    def is_built(self, override: str | Path | None = None) -> bool:
        try:
            return (self.root(override) / self.listing).is_file()
        except FileNotFoundError:  # the shared data dir is absent
            return False

    def clips(self, override: str | Path | None = None) -> list[Clip]:
        """The clips of a speech corpus (validated by `read_manifest`)."""
        if self.role != "speech":
            raise ValueError(f"corpus {self.name!r} holds {self.role}, not word clips: see {self.listing}")
        return read_manifest(self.root(override))

    def missing_hint(self) -> str:
        return f"{self.name}: not built ({self.how_to_get or f'kws-train data {self.builder}'})"


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "shared",
            "",
            "speech",
            "per dataset (see its README.md)",
            "real speech of ../shared/data ($KWS_DATA_DIR): gsc_v1_words, fsdd, arabic_sc, dspspeech20; "
            "gsc_v2_test (the benchmark) and gsc_noise",
            how_to_get="set KWS_DATA_DIR; the sources are listed by training.data.paths.OFFICIAL_SOURCES",
        ),
        Corpus(
            "synthetic",
            "corpora/synthetic",
            "speech",
            "synthetic (espeak-ng GPL-3.0+, flite/festival BSD-style, Piper joe CC0)",
            "1,000 words x 52 formant/diphone/Piper renditions",
            builder="synthetic",
            how_to_get="make data (kws-train data synthetic)",
        ),
        Corpus(
            "lsk",
            "corpora/lsk",
            "speech",
            "CC-BY-4.0 (LibriSpeech)",
            "LibriSpeech Keywords: windows centred on aligned words",
            builder="lsk",
            how_to_get="make data LIBRISPEECH=/path/LibriSpeech [LIBRISPEECH_ALIGNMENTS=...]",
        ),
        Corpus(
            "speechocean762",
            "corpora/speechocean762",
            "speech",
            "CC-BY-4.0 (speechocean762, Zhang et al. 2021)",
            "real non-native (Mandarin L1) adults and children: train speakers' words, aligned + ASR-filtered",
            builder="speechocean",
            how_to_get="git clone https://github.com/jimbozhang/speechocean762, then make data SPEECHOCEAN=DIR",
        ),
        Corpus(
            "kokoro",
            "corpora/kokoro",
            "speech",
            "synthetic-kokoro-82M-Apache-2.0",
            "2,000 words x 20 of the Kokoro-82M English voices and their mixes, ASR-filtered",
            builder="kokoro",
            how_to_get="make data (kws-train data kokoro; needs make setup's packages)",
        ),
        Corpus(
            "rooms",
            "corpora/rooms",
            "sounds",
            "per file (MIT, generated, CC-BY-4.0, GPL-2.0+)",
            "impulse responses (real, simulated) and noise beds (gsc_noise, Debian music), train/eval by file",
            builder="rooms",
            how_to_get="make data (kws-train data rooms)",
            listing="sounds.csv",
        ),
    )
}


def corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; registered: {', '.join(CORPORA)}")
    return CORPORA[name]


def resolve_root(text: str) -> Path:
    """A registered corpus name -> its default root; anything else is a path (relative to the repository)."""
    if text in CORPORA:
        return CORPORA[text].root()
    path = Path(text).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def built_corpora(role: str | None = None, names: Sequence[str] = ()) -> tuple[list[Corpus], list[Corpus]]:
    """(built, missing) registered corpora, optionally of one role or only the given names."""
    chosen = [corpus(name) for name in names] if names else list(CORPORA.values())
    chosen = [c for c in chosen if role is None or c.role == role]
    built = [c for c in chosen if c.is_built()]
    return built, [c for c in chosen if c not in built]
