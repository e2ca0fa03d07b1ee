"""The clips the studio's continuation and melody tabs start from: past results and uploads.

Where a source clip comes from, and what Generate takes from it:

    a finished result #n             ─► "#n result" (the picker follows the latest result)
    an uploaded file                 ─► audio.load_audio ─► "riff.wav (2)"
    studio.use_audio(wav, sr, name)  ─► "name (3)"
    continuation tab ─► the clip's last *prompt seconds* (the first tokens; duration is the
                        total length, so prompt seconds start below it: ``prompt_seconds_for``)
    melody tab       ─► the whole clip (its chroma conditions a melody model)

Uploads arrive in either ipywidgets version's shape (``widget_kit.upload_files``); a file that is
not audio is reported by the name the student gave it, never by a temporary path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import ConfigError, MusicGenEduError
from .widget_kit import make, upload_files

__all__ = ["Sources", "prompt_seconds_for"]


def prompt_seconds_for(duration: float) -> float:
    """A continuation prompt shorter than ``duration`` (the total length): about half of it on
    the slider's 0.5 s grid, 0.5 to 2 s (1.0 s -> 0.5, 2.0 s -> 1.0, 8.0 s -> 2.0)."""
    return min(2.0, max(0.5, duration // 1 / 2))


class Sources:
    """Source clips by label, with the picker, upload button and prompt-seconds slider.

    Args:
        duration: the studio's starting duration (sets the prompt seconds' default).
        on_error: ``on_error(message)`` for an upload that cannot be read.
    """

    def __init__(self, duration: float, on_error):
        self.clips: dict[str, tuple] = {}          # label -> (wav [T] or [C, T], sample_rate)
        self._on_error = on_error
        self.picker = make("Dropdown", "mg-studio-source", description="source", options=[])
        self.upload = make("FileUpload", accept="audio/*", multiple=False,
                            description="upload audio")
        self.prompt_seconds = make("FloatSlider", "mg-studio-prompt-seconds", min=0.5,
                                    max=10.0, step=0.5, value=prompt_seconds_for(duration),
                                    description="prompt seconds", layout={"width": "460px"},
                                    style={"description_width": "110px"})   # as the sliders
        self.row = make("HBox", children=[self.picker, self.upload])
        self.upload.observe(lambda _: self.uploaded(), "value")

    def add(self, wav, sample_rate: int, label: str) -> str:
        """Keep a clip under ``label`` and pick it."""
        self.clips[label] = (wav, int(sample_rate))
        self.picker.options = list(self.clips)
        self.picker.value = label
        return label

    def add_named(self, wav, sample_rate: int, name: str = "audio") -> str:
        """Keep a clip as ``"name (k)"`` (k counts every clip) and pick it."""
        return self.add(wav, sample_rate, f"{name} ({len(self.clips) + 1})")

    def pick(self, label: str) -> None:
        if label not in self.clips:
            raise ConfigError(f"source {label!r} is unknown; choose one of "
                              f"{list(self.clips)} or add one with use_audio(wav, sr).")
        self.picker.value = label

    def clip(self, mode: str) -> tuple:
        """``(wav, sample_rate)`` that ``mode`` starts from: the picked clip, cut to its last
        prompt seconds for a continuation; ConfigError when none is picked."""
        if self.picker.value not in self.clips:
            raise ConfigError(f"{mode} needs a source clip: pick a past result in "
                              "'source', or upload an audio file.")
        wav, sr = self.clips[self.picker.value]
        if mode == "continuation":                       # keep the last prompt seconds
            wav = wav[..., -max(1, int(self.prompt_seconds.value * sr)):]
        return wav, sr

    def uploaded(self) -> None:
        """An uploaded file becomes a source clip (read by ``audio.load_audio``)."""
        from .audio import load_audio

        for name, content in upload_files(self.upload):   # ipywidgets 7's value or 8's
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(name).name
                path.write_bytes(content)
                try:
                    wav, sr = load_audio(path)
                except MusicGenEduError as exc:   # named as the student named it, not by
                    self._on_error(str(exc).replace(str(path), name))   # the temp path
                    continue
            self.add_named(wav, sr, name=name)
