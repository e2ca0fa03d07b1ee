"""Synthetic music with captions, made with numpy: the training set of edu-tiny (issue #30).

Every clip is drawn from a :class:`ClipSpec` — what a caption can say — and rendered from it::

    ClipSpec(instrument="piano", texture="chords", mode="minor", tempo="fast",
             register="high", drums=True, bass=False, tonic=9, bpm=152)
      .caption()  -> "fast piano chords in A minor, high register, with drums"
      render()    -> [T] float32 at sample_rate: the part (melody | chords | arpeggio) in the
                     key, on the instrument, over the beat (drums, bass) at the tempo

The attributes and what makes each one audible:

    instrument  piano (additive partials, each decaying faster the higher it is),
                guitar (Karplus-Strong: a noise burst in a damped delay line, period by
                period), organ (steady drawbar harmonics), synth (a band-limited sawtooth
                through a closing low-pass)
    texture     melody (a scale walk around the tonic), chords (triads of a I-IV-V-I
                progression, struck together), arpeggio (the chord's tones one after another);
                one onset per beat in every texture, so the onset rate is the tempo
    mode        major or minor: the scale the notes and chords come from (natural minor)
    tempo       slow (66-84 bpm) or fast (140-168 bpm): every note and drum hit falls on a
                beat, so the onset rate is the tempo, with or without drums
    register    low (the part's notes around MIDI 45) or high (around MIDI 76)
    drums       kick on beats 1 and 3, snare on 2 and 4, a closed hi-hat on every beat
    bass        the chord's root as a sub bass (fundamental + octave, under 200 Hz), each beat

Deterministic: the same spec, seconds, sample rate and seed give the same samples; the seed
varies the melody's walk, the touch (note loudness) and the noise of drums and plucks.
Follows the textbook recipes: Karplus & Strong, "Digital Synthesis of Plucked-String and Drum
Timbres" (1983); additive piano partials after Fletcher & Rossing, *The Physics of Musical
Instruments* ch. 12 (no inharmonicity here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["ATTRIBUTES", "ClipSpec", "random_spec", "render", "synth_clips", "synth_specs",
           "clip_seed", "TEMPO_BPM", "REGISTER_MIDI", "NOTE_NAMES"]

ATTRIBUTES = {
    "instrument": ("piano", "guitar", "organ", "synth"),
    "texture": ("melody", "chords", "arpeggio"),
    "mode": ("major", "minor"),
    "tempo": ("slow", "fast"),
    "register": ("low", "high"),
}
TEMPO_BPM = {"slow": (66, 84), "fast": (140, 168)}      # beats per minute, drawn uniformly
REGISTER_MIDI = {"low": 45, "high": 76}                 # the part's reference note (A2, E5)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSION = (0, 3, 4, 0)                              # I IV V I (i iv v i in minor)
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # tonic -> name


@dataclass(frozen=True)
class ClipSpec:
    """What one clip plays; :meth:`caption` says it in words."""

    instrument: str = "piano"       # one of ATTRIBUTES["instrument"]
    texture: str = "melody"         # melody, chords or arpeggio
    mode: str = "major"             # major or minor (natural minor)
    tempo: str = "slow"             # slow or fast (TEMPO_BPM)
    register: str = "low"           # low or high (REGISTER_MIDI)
    drums: bool = False             # kick, snare, hi-hat on the beat grid
    bass: bool = False              # the chord's root on every beat, low
    tonic: int = 0                  # the key's pitch class, 0 = C ... 11 = B
    bpm: float = 72.0               # the tempo, within TEMPO_BPM[tempo]

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {allowed}.")
        low, high = TEMPO_BPM[self.tempo]
        if not low <= self.bpm <= high or not 0 <= self.tonic <= 11:
            raise ConfigError(f"bpm={self.bpm} must be within {low}-{high} for tempo="
                              f"{self.tempo!r}, and tonic={self.tonic} within 0-11.")

    def caption(self) -> str:
        """E.g. ``"fast piano chords in A minor, high register, with drums and bass"``.

        The key is named with its tonic, as MusicGen's training captions name it ("in A
        minor"): a mode word alone only relates notes to a tonic the model must guess, and a
        tiny decoder never learned it (teacher-forced loss unchanged by swapping "major" and
        "minor"), while a named key says which pitch classes to play.
        """
        extras = [name for name in ("drums", "bass") if getattr(self, name)]
        tail = f", with {' and '.join(extras)}" if extras else ""
        return (f"{self.tempo} {self.instrument} {self.texture} in {NOTE_NAMES[self.tonic]} "
                f"{self.mode}, "
                f"{self.register} register{tail}")

    def replace(self, **changes) -> ClipSpec:
        """This spec with ``changes`` (e.g. ``tempo="fast", bpm=150``), checked again."""
        return dataclasses.replace(self, **changes)


def random_spec(rng: np.random.Generator, **fixed) -> ClipSpec:
    """A spec with every attribute drawn uniformly, except those given in ``fixed``."""
    values = {name: fixed.get(name, rng.choice(options).item())
              for name, options in ATTRIBUTES.items()}
    low, high = TEMPO_BPM[values["tempo"]]
    values.update(drums=fixed.get("drums", bool(rng.random() < 0.5)),
                  bass=fixed.get("bass", bool(rng.random() < 0.5)),
                  tonic=fixed.get("tonic", int(rng.integers(12))),
                  bpm=fixed.get("bpm", float(rng.uniform(low, high))))
    return ClipSpec(**values)


# --- instruments: one note -> [n] samples --------------------------------------------------------
def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _envelope(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    env = np.ones(n, dtype=np.float64)
    a, r = min(n, max(1, int(attack_s * sr))), min(n, max(1, int(release_s * sr)))
    env[:a] = np.linspace(0, 1, a)
    env[n - r:] *= np.linspace(1, 0, r)
    return env


def _note(instrument: str, midi: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    f, t = _hz(midi), np.arange(n) / sr
    if instrument == "piano":        # partial k: weight 1/k, decay rate growing with k
        partials = [k for k in range(1, 9) if k * f < sr / 2]
        wave = sum(np.sin(2 * np.pi * k * f * t) * np.exp(-t * (2.5 + 1.5 * k)) / k
                   for k in partials)
        return wave * _envelope(n, sr, 0.004, 0.02)
    if instrument == "guitar":       # Karplus-Strong, one period of the delay line at a time
        period = max(2, int(round(sr / f)))
        line = rng.uniform(-1, 1, period)
        out = np.empty(n + period)
        out[:period] = line
        loss = 10 ** (-3 * period / (sr * 1.5))                # 60 dB in 1.5 s, at any pitch
        for start in range(period, n + period, period):
            prev = out[start - period:start]
            block = loss * 0.5 * (prev + np.roll(prev, 1))     # averaging: highs fade first
            out[start:start + period] = block[: len(out) - start]
        return out[period:] * _envelope(n, sr, 0.001, 0.02)
    if instrument == "organ":        # drawbars 8', 4', 2 2/3', 2': steady, soft edges
        wave = sum(w * np.sin(2 * np.pi * k * f * t)
                   for k, w in ((1, 1.0), (2, 0.7), (3, 0.4), (4, 0.3)) if k * f < sr / 2)
        return wave * _envelope(n, sr, 0.03, 0.05)
    # synth: band-limited sawtooth (harmonics 1/k) with a falling brightness
    cutoff = f * (2 + 14 * np.exp(-t * 6))                    # Hz, closes over the note
    wave = sum(np.sin(2 * np.pi * k * f * t) / k * np.clip((cutoff - k * f) / f, 0, 1)
               for k in range(1, 24) if k * f < sr / 2)       # each harmonic fades, no click
    return 0.8 * wave * _envelope(n, sr, 0.005, 0.03)


def _bass(midi: float, n: int, sr: int) -> np.ndarray:
    """A sub bass: the fundamental and a soft octave, all below 200 Hz (under the part)."""
    f, t = _hz(midi), np.arange(n) / sr
    wave = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)
    return wave * np.exp(-t * 3) * _envelope(n, sr, 0.005, 0.03)


# --- drums ------------------------------------------------------------------------------------
def _kick(n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    sweep = 50 + 100 * np.exp(-t * 30)                         # Hz: 150 -> 50
    return np.sin(2 * np.pi * np.cumsum(sweep) / sr) * np.exp(-t * 12)


def _noise_hit(n: int, sr: int, rng: np.random.Generator, decay: float, high: bool) -> np.ndarray:
    noise = rng.uniform(-1, 1, n)
    if high:                                                   # hi-hat: first difference
        noise = np.diff(noise, prepend=0.0)
    return noise * np.exp(-np.arange(n) / sr * decay)


# --- the clip -----------------------------------------------------------------------------------
def _chord(spec: ClipSpec, bar: int) -> list[int]:
    """The triad (scale-degree offsets 0, 2, 4 from the bar's degree) as pitch classes."""
    scale, degree = SCALES[spec.mode], PROGRESSION[bar % len(PROGRESSION)]
    return [(spec.tonic + scale[(degree + i) % 7]) % 12 for i in (0, 2, 4)]


def _near(pitch_class: int, reference: int) -> int:
    """The MIDI note of ``pitch_class`` closest to ``reference`` (within a tritone)."""
    return reference + ((pitch_class - reference + 6) % 12) - 6


def render(spec: ClipSpec, seconds: float = 5.0, sample_rate: int = 32000,
           seed: int = 0) -> np.ndarray:
    """The clip ``spec`` describes: ``[T]`` float32 in [-1, 1] (peak 0.9), T = seconds * rate."""
    if not 0.5 <= seconds <= 60 or sample_rate < 8000:
        raise ConfigError(f"seconds={seconds} must be within 0.5-60 and sample_rate="
                          f"{sample_rate} at least 8000.")
    rng = np.random.default_rng([seed, spec.tonic, int(spec.bpm * 100)])
    total, beat = int(seconds * sample_rate), 60.0 / spec.bpm
    out = np.zeros(total + sample_rate, dtype=np.float64)     # room for the last note's tail
    ref = REGISTER_MIDI[spec.register]

    def place(samples: np.ndarray, at_s: float, gain: float) -> None:
        start = int(at_s * sample_rate)
        out[start:start + len(samples)] += gain * samples[: len(out) - start]

    beats = int(np.ceil(seconds / beat))
    step = 0                                                   # the melody's scale position
    for b in range(beats):
        bar, at = b // 4, b * beat
        chord = _chord(spec, bar)
        touch = rng.uniform(0.8, 1.0)
        if spec.texture == "chords":
            length = int(beat * 0.9 * sample_rate)
            for pc in chord:
                place(_note(spec.instrument, _near(pc, ref), length, sample_rate, rng), at,
                      0.35 * touch)
        else:                                      # melody / arpeggio: one note per beat
            if spec.texture == "arpeggio":
                pc = chord[b % 3]
            else:                                  # a walk around the tonic (degree 0)
                step = int(np.clip(step + rng.choice([-2, -1, 1, 2]), -4, 4))
                pc = (spec.tonic + SCALES[spec.mode][step % 7]) % 12
            place(_note(spec.instrument, _near(pc, ref), int(beat * 0.95 * sample_rate),
                        sample_rate, rng), at, 0.6 * touch)
        if spec.bass:
            place(_bass(_near(chord[0], 36), int(beat * 0.9 * sample_rate), sample_rate), at,
                  0.5)                                 # MIDI 30-42: its octave under 200 Hz
        if spec.drums:
            hit = int(0.25 * sample_rate)
            place(_kick(hit, sample_rate) if b % 2 == 0 else
                  _noise_hit(hit, sample_rate, rng, 18, high=False), at, 0.7 if b % 2 else 0.9)
            place(_noise_hit(int(0.05 * sample_rate), sample_rate, rng, 80, high=True), at,
                  0.25)
    clip = out[:total]
    return (0.9 * clip / max(np.abs(clip).max(), 1e-9)).astype(np.float32)


def synth_clips(n: int, seconds: float = 5.0, sample_rate: int = 32000, seed: int = 0,
                **fixed) -> list[tuple[np.ndarray, str, ClipSpec]]:
    """``n`` clips with random specs (``fixed`` attributes held): ``(wav [T], caption, spec)``.

    Deterministic under ``seed``: clip i is the same whatever ``n`` is.
    """
    return [(render(spec, seconds, sample_rate, seed=clip_seed(seed, i)), spec.caption(), spec)
            for i, spec in enumerate(synth_specs(n, seed, **fixed))]


def clip_seed(seed: int, i: int) -> int:
    """The render seed of clip ``i`` of ``synth_clips(..., seed=seed)``."""
    return seed * 100_003 + i


def synth_specs(n: int, seed: int = 0, **fixed) -> list[ClipSpec]:
    """The specs of ``synth_clips(n, ..., seed=seed, **fixed)``, without rendering them."""
    if not 1 <= n <= 100_000:
        raise ConfigError(f"n={n} clips must be within 1-100000.")
    return [random_spec(np.random.default_rng([seed, i]), **fixed) for i in range(n)]
