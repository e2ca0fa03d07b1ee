"""The toy training set: deterministic arpeggios, in the key, with clearly different captions."""

import numpy as np
import pytest

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.train.toy import key_pitch_classes

SR = 32000


def pitch_class(freq: float) -> int:
    """The nearest equal-tempered pitch class (0 = C) of ``freq`` Hz."""
    return round(69 + 12 * np.log2(freq / 440.0)) % 12


def dominant_frequency(wav: np.ndarray, sample_rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(wav[0] * np.hanning(wav.shape[-1])))
    return float(np.fft.rfftfreq(wav.shape[-1], 1 / sample_rate)[spectrum.argmax()])


def test_shapes_level_and_determinism():
    wavs, captions = mg.arpeggio_clips(8, seconds=1.5, seed=3)
    assert len(wavs) == len(captions) == 8
    for wav in wavs:
        assert wav.shape == (1, int(1.5 * SR)) and wav.dtype == np.float32
        assert np.abs(wav).max() == pytest.approx(0.5) and np.isfinite(wav).all()
    again, same = mg.arpeggio_clips(8, seconds=1.5, seed=3)
    assert same == captions and all(np.array_equal(a, b) for a, b in zip(wavs, again))
    other, other_captions = mg.arpeggio_clips(8, seconds=1.5, seed=4)
    assert other_captions == captions                         # the seed changes the touch only
    assert not np.array_equal(other[0], wavs[0])


def test_captions_differ_in_at_least_two_of_chord_pattern_register():
    _, captions = mg.arpeggio_clips(12, seconds=0.25)
    assert captions[0] == "A minor rising bass"
    assert len(set(captions)) == 12
    fields = [(c.split()[0] + c.split()[1], c.split()[2], c.split()[3]) for c in captions]
    for i, a in enumerate(fields):
        for b in fields[:i]:
            assert sum(x != y for x, y in zip(a, b)) >= 2, (a, b)
    assert len(set(mg.arpeggio_clips(72, seconds=0.25)[1])) == 72


@pytest.mark.parametrize("key", ["A minor", "C major", "F# minor", "Bb major"])
def test_every_clip_sounds_a_pitch_of_the_key(key):
    """The loudest frequency of each clip is a note of the key (and the chord it names)."""
    scale = set(key_pitch_classes(key))
    wavs, captions = mg.arpeggio_clips(8, seconds=1.0, key=key)
    for wav, caption in zip(wavs, captions):
        assert pitch_class(dominant_frequency(wav)) in scale, caption
    assert key_pitch_classes("A minor") == (9, 11, 0, 2, 4, 5, 7)


def test_the_first_clip_starts_on_the_tonic_in_the_bass():
    wav, _ = mg.arpeggio_clips(1, seconds=1.0, bpm=120)
    first_note = wav[0][:, : SR // 8]                          # one sixteenth at 120 bpm
    assert dominant_frequency(first_note) == pytest.approx(110.0, rel=0.06)   # A2


@pytest.mark.parametrize("bad", [dict(n=0), dict(n=73), dict(seconds=0.1), dict(bpm=10),
                                 dict(key="H minor"), dict(key="A dorian")])
def test_bad_arguments_name_the_value(bad):
    with pytest.raises(ConfigError, match=str(next(iter(bad.values())))):
        mg.arpeggio_clips(**bad)
