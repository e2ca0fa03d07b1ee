"""Training data: clips and captions found, windows encoded once, every bad input named."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import musicgen_edu as mg
from musicgen_edu.errors import DataError
from musicgen_edu.train.data import build_dataset, find_clips, write_dataset

SR = 32000


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return mg.load_model("debug", device="cpu")


def test_a_table_and_sidecars_give_the_same_clips(tmp_path):
    write_dataset(tmp_path / "table", [tone(1.0), tone(1.0, 330)], SR, ["low hum", "high hum"])
    side = tmp_path / "side"
    side.mkdir()
    sf.write(side / "a.wav", tone(1.0), SR)
    (side / "a.txt").write_text("low hum\n")
    sf.write(side / "b.wav", tone(1.0, 330), SR)
    (side / "b.json").write_text(json.dumps({"description": "high hum", "bpm": 90}))
    assert [c.caption for c in find_clips(tmp_path / "table")] == ["low hum", "high hum"]
    assert [c.caption for c in find_clips(side)] == ["low hum", "high hum"]
    jsonl = tmp_path / "table" / "more.jsonl"
    jsonl.write_text('{"path": "clip_000.wav", "description": "from jsonl"}\n')
    assert [c.caption for c in find_clips(jsonl)] == ["from jsonl"]


def test_windows_are_cut_at_the_hop_and_encoded_to_the_model_s_frames(tmp_path, model):
    write_dataset(tmp_path / "d", [tone(2.5), tone(1.0, 440)], SR, ["a", "b"])
    data = build_dataset(tmp_path / "d", model, tmp_path / "tok", window=1.0, hop=0.5,
                         progress=False)
    assert len(data) == 4 + 1                      # starts 0, .5, 1, 1.5 s; then one
    tokens, caption = data[0]
    assert tokens.shape == (4, 50) and tokens.dtype == torch.long and caption == "a"
    assert data.captions == ["a"] * 4 + ["b"] and data.frames == 50
    direct = mg.MusicGenerator(model, backend="transformers").backend.encode_audio(
        torch.from_numpy(tone(2.5)[None, None, 16000:48000]))
    assert torch.equal(data[1][0], direct[0])      # the second window: 0.5 s .. 1.5 s


def test_encoding_is_done_once_and_captions_are_read_fresh(tmp_path, model):
    write_dataset(tmp_path / "d", [tone(1.0), tone(1.0, 330)], SR, ["a", "b"])
    build_dataset(tmp_path / "d", model, tmp_path / "tok", window=1.0, hop=1.0, progress=False)
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "tok").glob("*.pt")}
    assert len(shards) == 2
    write_dataset(tmp_path / "d", [tone(1.0), tone(1.0, 330)], SR, ["a", "edited"])
    again = build_dataset(tmp_path / "d", model, tmp_path / "tok", window=1.0, hop=1.0,
                          progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tok").glob("*.pt")} == shards
    assert again.captions == ["a", "edited"]
    other = build_dataset(tmp_path / "d", model, tmp_path / "tok", window=0.5, hop=0.5,
                          progress=False)          # other settings: new shards, old ones kept
    assert len(list((tmp_path / "tok").glob("*.pt"))) == 4 and len(other) == 4


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="no audio files in"):
        find_clips(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        find_clips(tmp_path / "nowhere")


def test_a_caption_column_missing_is_named(tmp_path):
    write_dataset(tmp_path, [tone(1.0)], SR, ["x"])
    (tmp_path / "captions.csv").write_text("path,label\nclip_000.wav,x\n")
    with pytest.raises(DataError, match=r"columns \['path', 'label'\]; it needs 'path' and "
                                        r"'caption'"):
        find_clips(tmp_path)


def test_every_clip_without_a_caption_is_listed(tmp_path):
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", tone(1.0), SR)
    (tmp_path / "b.txt").write_text("fine")
    (tmp_path / "c.txt").write_text("   ")
    with pytest.raises(DataError, match=r"(?s)2 clip\(s\).*'a.wav': no caption.*'c.wav': caption "
                                        r"is '   '") as err:
        find_clips(tmp_path)
    assert "b.wav" not in str(err.value)


def test_bad_clips_are_named_and_the_good_ones_kept(tmp_path, model):
    """An unreadable file, a silent one and one shorter than the window: one error naming all
    three with the reason; the good clip is encoded and stays; fixing the rest re-encodes only
    them."""
    write_dataset(tmp_path / "d", [tone(1.0), np.zeros(SR, np.float32), tone(0.5)], SR,
                  ["good", "silent", "short"])
    (tmp_path / "d" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with open(tmp_path / "d" / "captions.csv", "a") as f:
        f.write("broken.wav,broken\n")
    with pytest.raises(DataError) as err:
        build_dataset(tmp_path / "d", model, tmp_path / "tok", window=1.0, progress=False)
    message = str(err.value)
    assert "3 of 4 clips cannot be used (1 encoded and kept" in message
    assert "clip_001.wav': it is silent" in message
    assert "clip_002.wav': it lasts 0.50 s, shorter than the window=1.0 s" in message
    assert "broken.wav': cannot read it as audio" in message
    kept = list((tmp_path / "tok").glob("*.pt"))
    assert len(kept) == 1 and not list((tmp_path / "tok").glob(".tmp-*"))
    write_dataset(tmp_path / "d", [tone(1.0)], SR, ["good"])       # the table now lists one
    data = build_dataset(tmp_path / "d", model, tmp_path / "tok", window=1.0, progress=False)
    assert len(data) == 1 and list((tmp_path / "tok").glob("*.pt")) == kept


def test_non_finite_samples_are_refused(tmp_path, model):
    wav = tone(1.0)
    wav[100] = np.nan
    sf.write(tmp_path / "nan.wav", wav, SR, subtype="FLOAT")
    (tmp_path / "nan.txt").write_text("nan inside")
    with pytest.raises(DataError, match="NaN or infinite"):
        build_dataset(tmp_path, model, tmp_path / "tok", window=1.0, progress=False)


def test_stereo_models_get_two_channels(tmp_path):
    stereo = mg.load_model("debug-stereo", device="cpu")
    write_dataset(tmp_path / "d", [tone(1.0)], SR, ["mono in, stereo out"])
    data = build_dataset(tmp_path / "d", stereo, tmp_path / "tok", window=1.0, progress=False)
    assert data[0][0].shape == (8, 50)
