"""EnCodec tokens (codec.py) and the delay pattern's round trip, on the offline debug models.

The debug models' EnCodec has random weights, so reconstructions are not faithful: these tests
check shapes, rates, agreement between paths and finiteness, never that the error is small.
"""

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.codec import (
    decode_tokens,
    decode_with_codebooks,
    encode_audio,
    plot_delay_pattern,
    plot_reconstruction,
    reconstruction_error,
)


@pytest.fixture(scope="module")
def model():
    return mg.load_model("debug", device="cpu")


@pytest.fixture(scope="module")
def stereo():
    return mg.load_model("debug-stereo", device="cpu")


def chord(seconds: float, sample_rate: int) -> np.ndarray:
    """A quiet A-minor chord ``[T]`` (float32)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220.0, 261.63, 329.63)).astype(np.float32)


@pytest.fixture(scope="module")
def tokens(model):
    return encode_audio(model, chord(0.5, model.sample_rate), model.sample_rate)


# ------------------------------------------------------------------ encode / decode

def test_encode_shape_rate_and_range(model, tokens):
    frames = round(0.5 * model.frame_rate)
    assert tokens.shape == (1, model.num_codebooks, frames)
    assert tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < model.config.audio_encoder.codebook_size


def test_encode_decode_length(model, tokens):
    wav = decode_tokens(model, tokens)
    hop = model.sample_rate // model.frame_rate
    assert hop * model.frame_rate == model.sample_rate
    assert wav.shape == (1, model.audio_channels, tokens.shape[-1] * hop)
    assert wav.dtype == torch.float32 and torch.isfinite(wav).all()


def test_encode_resamples_and_accepts_every_layout(model, tokens):
    wav = chord(0.5, 16000)                                    # another rate: resampled first
    by_rate = encode_audio(model, wav, 16000)
    assert by_rate.shape == tokens.shape
    # [T], [C, T], [B, C, T], numpy or torch: same codes; a stereo input is mixed to mono
    mono = chord(0.5, model.sample_rate)
    for layout in (mono[None], mono[None, None], torch.from_numpy(mono), np.stack([mono, mono])):
        assert torch.equal(encode_audio(model, layout, model.sample_rate), tokens)
    batch = encode_audio(model, np.stack([mono[None], 0.5 * mono[None]]), model.sample_rate)
    assert batch.shape == (2, *tokens.shape[1:])
    # batched convolutions round differently, and a latent halfway between two codewords may
    # flip: equal up to a few nearest-neighbour ties
    assert (batch[:1] == tokens).float().mean() > 0.95


def test_encode_is_the_continuation_path(model, tokens):
    from musicgen_edu.backends import TransformersBackend

    wav = torch.from_numpy(chord(0.5, model.sample_rate))[None, None]
    assert torch.equal(TransformersBackend(model).encode_audio(wav), tokens)


def test_encode_rejects_bad_audio(model):
    with pytest.raises(mg.AudioError, match="shape"):
        encode_audio(model, np.zeros((1, 1, 1, 10), np.float32), model.sample_rate)
    with pytest.raises(mg.AudioError, match="NaN"):
        encode_audio(model, np.full(640, np.nan, np.float32), model.sample_rate)
    with pytest.raises(mg.AudioError, match="int16"):
        encode_audio(model, np.zeros(640, np.int16), model.sample_rate)
    with pytest.raises(mg.ConfigError, match="-3"):
        encode_audio(model, np.zeros(640, np.float32), -3)


def test_decode_with_all_codebooks_equals_decode(model, tokens):
    full = decode_tokens(model, tokens)
    assert torch.equal(decode_with_codebooks(model, tokens, model.num_codebooks), full)
    for n in range(1, model.num_codebooks):
        part = decode_with_codebooks(model, tokens, n)
        assert part.shape == full.shape and torch.isfinite(part).all()
    assert not torch.equal(decode_with_codebooks(model, tokens, 1), full)  # fewer = different


@pytest.mark.parametrize("n", [0, 5, -1, 2.0, True, "2"])
def test_decode_with_codebooks_out_of_range(model, tokens, n):
    with pytest.raises(mg.ConfigError) as err:
        decode_with_codebooks(model, tokens, n)
    message = str(err.value)
    assert f"n={n!r}" in message and f"[1, {model.num_codebooks}]" in message


def test_stereo_encode_gives_pairs(stereo):
    left = chord(0.5, stereo.sample_rate)
    tokens = encode_audio(stereo, np.stack([left, 0.3 * left]), stereo.sample_rate)
    assert tokens.shape == (1, 8, round(0.5 * stereo.frame_rate))
    assert tokens.shape[1] == stereo.num_codebooks == 4 * stereo.audio_channels
    # rows interleave [L0, R0, L1, R1, ...]: left rows are what the mono codec gives the left
    alone = encode_audio(stereo, np.stack([left, left]), stereo.sample_rate)
    assert torch.equal(tokens[:, ::2], alone[:, ::2])
    wav = decode_with_codebooks(stereo, tokens, 2)
    assert wav.shape == (1, 2, tokens.shape[-1] * (stereo.sample_rate // stereo.frame_rate))
    with pytest.raises(mg.ConfigError, match=r"n=3 .*even"):
        decode_with_codebooks(stereo, tokens, 3)


# ------------------------------------------------------------------ reconstruction error

def test_reconstruction_error_rows(model):
    df = reconstruction_error(model, chord(0.5, 44100), 44100)
    assert list(df.columns) == ["codebooks", "mse", "snr_db"]
    assert df["codebooks"].tolist() == list(range(1, model.num_codebooks + 1))
    assert np.isfinite(df[["mse", "snr_db"]].to_numpy()).all() and (df["mse"] > 0).all()
    # the last row is the full decode: recompute its MSE by hand
    ref = mg.resample(chord(0.5, 44100), 44100, model.sample_rate)
    tokens = encode_audio(model, ref, model.sample_rate)
    full = decode_tokens(model, tokens)[0, 0, : ref.shape[-1]].numpy()
    assert df["mse"].iloc[-1] == pytest.approx(np.mean((full - ref) ** 2), rel=1e-4)


def test_reconstruction_error_subset_stereo_and_silence(model, stereo):
    df = reconstruction_error(model, chord(0.2, model.sample_rate), model.sample_rate,
                              codebooks=[1, model.num_codebooks])
    assert df["codebooks"].tolist() == [1, model.num_codebooks]
    wide = np.stack([chord(0.2, stereo.sample_rate)] * 2)
    assert reconstruction_error(stereo, wide, stereo.sample_rate)["codebooks"].tolist() == \
        [2, 4, 6, 8]
    silent = reconstruction_error(model, np.zeros(3200, np.float32), model.sample_rate)
    assert np.isfinite(silent["snr_db"]).all()


# ------------------------------------------------------------------ plots

def test_plots_return_axes(model):
    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    ax = plot_delay_pattern(4, 5)
    assert isinstance(ax, Axes)
    assert len(ax.texts) == 4 * (5 + 3 + 1)                     # one label per grid cell
    assert sum(t.get_text() == "S" for t in ax.texts) == 4 * (3 + 1)
    assert isinstance(plot_delay_pattern(8, 3, audio_channels=2), Axes)
    df = reconstruction_error(model, chord(0.2, model.sample_rate), model.sample_rate)
    assert isinstance(plot_reconstruction(df), Axes)
    assert isinstance(plot_reconstruction(df.to_dict("records")), Axes)
    with pytest.raises(mg.ConfigError, match="frames=0"):
        plot_delay_pattern(4, 0)
    with pytest.raises(mg.ConfigError, match="audio_channels=2"):
        plot_delay_pattern(3, 4, audio_channels=2)


# ------------------------------------------------------------------ delay pattern properties

@settings(max_examples=60, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3), pairs=st.integers(1, 4), frames=st.integers(1, 25),
       channels=st.sampled_from([1, 2]))
def test_delay_pattern_round_trip_and_layout(data, batch, pairs, frames, channels):
    k = pairs * channels
    values = data.draw(st.lists(st.integers(0, 2047), min_size=batch * k * frames,
                                max_size=batch * k * frames))
    tokens = torch.tensor(values).view(batch, k, frames)
    special = 2048
    grid = mg.delay_pattern(tokens, special, channels)
    delays = mg.codebook_delays(k, channels)
    assert grid.shape == (batch, k, frames + max(delays) + 1)
    assert torch.equal(mg.undelay(grid, frames, channels), tokens)
    for column in range(grid.shape[-1]):                # codebook k holds frame column-1-delay
        for row, delay in enumerate(delays):
            frame = column - 1 - delay
            expected = tokens[:, row, frame] if 0 <= frame < frames else torch.full((batch,),
                                                                                  special)
            assert torch.equal(grid[:, row, column], expected), (row, column)


def test_token_grids_count_whole_codebooks_and_frames():
    """Lecture 01's token plot showed codebook 0.5 and frame 2.5 (fractional ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    mg.plot_tokens(torch.randint(0, 2048, (4, 9)), ax)
    fig.canvas.draw()
    for ticks in (ax.get_xticks(), ax.get_yticks()):
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_a_flat_reconstruction_curve_is_drawn_flat():
    """Lecture 03: 0.0003 dB between the points was auto-scaled into a steep fall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicgen_edu.codec import MIN_SNR_SPAN_DB

    rows = [{"codebooks": n, "snr_db": 12.0 + 1e-4 * n, "mse": 0.01} for n in (1, 2, 3, 4)]
    ax = mg.plot_reconstruction(rows)
    low, high = ax.get_ylim()
    assert high - low >= MIN_SNR_SPAN_DB and low < 12.0 < high
    plt.close(ax.figure)
    steep = [{"codebooks": n, "snr_db": 3.0 * n, "mse": 0.01} for n in (1, 2, 3, 4)]
    low, high = mg.plot_reconstruction(steep).get_ylim()          # a real range: as it is
    assert low <= 3.0 and high >= 12.0 and high - low < 3 * 12
    plt.close("all")
