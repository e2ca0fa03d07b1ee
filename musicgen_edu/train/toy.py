"""A toy training set made with numpy: arpeggios in one key at one tempo (lecture 10).

The offline ``debug`` model has random weights, so any consistent style is new to it. These
clips are one: every clip arpeggiates one chord of the key, note after note at a fixed tempo,
and the clips differ in the chord, the pattern and the register, which their captions name
(``"A minor rising bass"``):

    key "A minor" ─► scale A B C D E F G ─► triads on its degrees: A minor, D minor, E minor,
                     F major, C major, G major (the diminished one is left out)
    clip i        ─► a chord, a pattern (rising / falling / wave: up then down / leaping) and
                     a register (bass / middle / high), one sixteenth note per step
    each note     ─► a plucked tone: harmonics 1-4 with falling weights, 5 ms attack, decay

Each clip's three differ from the clips before it in as many as they can (the first six in all
three, the first twelve in at least two), so no two of those captions differ in one word (the debug
model's random text encoder barely tells near-identical strings apart). Pure numpy and
deterministic: the same arguments give the same samples; ``seed`` only varies the loudness
of the notes a little (a player's touch).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import ConfigError

__all__ = ["arpeggio_clips", "key_pitch_classes", "NOTE_NAMES"]

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}   # natural minor
DEGREES = {"major": (0, 3, 4, 5, 1, 2), "minor": (0, 3, 4, 5, 2, 6)}  # no diminished triad
QUALITIES = {(4, 7): "major", (3, 7): "minor"}        # (third, fifth) above the root, semitones
PATTERNS = {"rising": (0, 1, 2, 3, 4, 5), "falling": (5, 4, 3, 2, 1, 0),   # chord-tone indices
            "wave": (0, 1, 2, 3, 4, 5, 4, 3, 2, 1),           # rising then falling
            "leaping": (0, 2, 1, 3, 5, 4)}
REGISTERS = {"bass": 45, "middle": 57, "high": 69}   # lowest MIDI note of the root's octave


def key_pitch_classes(key: str) -> tuple[int, ...]:
    """The pitch classes (0 = C ... 11 = B) of ``key``, e.g. ``"A minor"`` -> ``(9, 11, 0, 2, 4, 5, 7)``."""
    parts = key.split()
    if len(parts) != 2 or parts[1] not in SCALES or FLATS.get(parts[0], parts[0]) not in NOTE_NAMES:
        raise ConfigError(f"key={key!r} is not a key; give a note and major or minor, e.g. "
                          "'A minor', 'C major', 'F# minor', 'Bb major'.")
    tonic = NOTE_NAMES.index(FLATS.get(parts[0], parts[0]))
    return tuple((tonic + step) % 12 for step in SCALES[parts[1]])


def _chords(key: str) -> list[tuple[str, tuple[int, int, int]]]:
    """The key's major and minor triads: (name, pitch classes of root, third, fifth)."""
    scale, mode = key_pitch_classes(key), key.split()[1]
    chords = []
    for degree in DEGREES[mode]:
        root, third, fifth = (scale[(degree + i) % 7] for i in (0, 2, 4))
        quality = QUALITIES[((third - root) % 12, (fifth - root) % 12)]
        chords.append((f"{NOTE_NAMES[root]} {quality}", (root, third, fifth)))
    return chords


def _combinations(n: int, sizes: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """n distinct (chord, pattern, register) indices, each as far as it can be from those
    before it: most fields different from the closest one, then from all (ties: in order)."""
    remaining = [(c, p, r) for c, p, r in itertools.product(*map(range, sizes))]
    picked: list[tuple[int, int, int]] = []

    def distance(a, b) -> int:                            # how many of the 3 fields differ
        return sum(x != y for x, y in zip(a, b))

    for _ in range(n):
        best = max(remaining, key=lambda c: (min((distance(c, p) for p in picked), default=3),
                                             sum(distance(c, p) for p in picked)))
        picked.append(best)
        remaining.remove(best)
    return picked


def _note(freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    """One plucked note ``[T]``: harmonics 1-4 (weights 1, .5, .25, .125), attack, decay."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = sum(0.5 ** (h - 1) * np.sin(2 * np.pi * h * freq * t) for h in range(1, 5))
    envelope = np.minimum(t / 0.005, 1.0) * np.exp(-6.0 * t)
    return tone * envelope


def arpeggio_clips(n: int = 8, seconds: float = 4.0, key: str = "A minor", bpm: float = 120.0,
                   sample_rate: int = 32000, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` arpeggio clips in ``key`` at ``bpm`` (sixteenth notes) and their captions.

    Args:
        n: how many clips, 1 to 72 (6 chords x 4 patterns x 3 registers).
        seconds: length of each clip, 0.25 to 60.
        key: a note and ``major`` or ``minor``, e.g. ``"A minor"``, ``"Bb major"``.
        bpm: tempo in beats (quarter notes) per minute, 40 to 240.
        sample_rate: samples per second (MusicGen's codec runs at 32000).
        seed: varies each note's loudness slightly; the same seed gives the same clips.

    Returns:
        ``(wavs, captions)``: ``n`` float32 arrays ``[1, T]`` with ``T = seconds * sample_rate``
        and peak 0.5, and ``n`` captions such as ``"A minor rising bass"`` (chord, pattern,
        register: short, so that the captions share few words).

    Example: clip 0 of ``arpeggio_clips(key="A minor")`` plays A2 C3 E3 A3 C4 E4 A2 C3 ...,
    each note an eighth of a second at 120 bpm.
    """
    sizes = (6, len(PATTERNS), len(REGISTERS))
    if not 1 <= n <= sizes[0] * sizes[1] * sizes[2]:
        raise ConfigError(f"n={n} clips; allowed: 1 to {sizes[0] * sizes[1] * sizes[2]}.")
    if not 0.25 <= seconds <= 60:
        raise ConfigError(f"seconds={seconds}; allowed: 0.25 to 60 per clip.")
    if not 40 <= bpm <= 240:
        raise ConfigError(f"bpm={bpm}; allowed: 40 to 240.")
    chords, patterns, registers = _chords(key), list(PATTERNS.items()), list(REGISTERS.items())
    rng = np.random.default_rng(seed)
    step = round(60.0 / bpm / 4 * sample_rate)              # samples per sixteenth note
    length = round(seconds * sample_rate)                   # T
    wavs, captions = [], []
    for c, p, r in _combinations(n, sizes):
        (name, pcs), (pattern, order), (register, low) = chords[c], patterns[p], registers[r]
        root = low + (pcs[0] - low) % 12                     # the root's MIDI note in the register
        triad = [root + (pc - pcs[0]) % 12 for pc in pcs]    # root, third, fifth above it
        tones = triad + [m + 12 for m in triad]              # two octaves: 6 chord tones
        wav = np.zeros(length + 4 * step)
        for i, start in enumerate(range(0, length, step)):   # one note per sixteenth
            midi = tones[order[i % len(order)]]
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            note = _note(freq, 4 * step / sample_rate, sample_rate)   # rings for a beat
            wav[start: start + len(note)] += rng.uniform(0.8, 1.0) * note
        wav = wav[:length]
        wavs.append((0.5 * wav / np.abs(wav).max()).astype(np.float32)[None])   # [1, T]
        captions.append(f"{name} {pattern} {register}")
    return wavs, captions
