"""GenerationConfig and Generation: how to sample, and what one generate call made.

The two data types of every generation mode (``generator.py`` holds the loop that turns the
one into the other): a validated settings dataclass whose fields carry their allowed ranges
as metadata (read by ``validate``, the widgets and the service's request schema, so each range
is written once), and the result with audio ``[B, C, T]``, tokens ``[B, K, S]``, the seeds
actually used and the timings. Defaults follow audiocraft's ``MusicGen.set_generation_params``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError, check_int, check_range
from .sampling import SAMPLERS

__all__ = ["GenerationConfig", "Generation", "MAX_SEED", "MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS",
           "check_text", "check_continuation", "ranged", "validate_fields", "replace_fields"]

MAX_SEED = 2**63 - 1
# Every text that reaches the text encoder (prompt, negative prompt) is bounded twice: in
# characters (cheap, checked first) and in the encoder's tokens. Encoder memory and time grow
# with the square of the token count, so an unbounded text is a way to exhaust memory.
MAX_PROMPT_CHARS = 2000             # characters per prompt or negative prompt
MAX_PROMPT_TOKENS = 512             # text-encoder tokens per text (</s> included); T5's limit
_LONG_FORM = "Durations past the model's 30 s window use sliding-window long form."
_NOT_ZERO = "For deterministic output use use_sampling=False instead of 0."


def ranged(default, low, high, *, low_open: bool = False, high_open: bool = False,
           integer: bool = False, hint: str = ""):
    """A dataclass field whose metadata holds its allowed range (read by
    :func:`validate_fields` and by the widgets' sliders)."""
    return field(default=default, metadata=dict(low=low, high=high, low_open=low_open,
                                                high_open=high_open, integer=integer, hint=hint))


def replace_fields(settings, what: str, changes: dict):
    """``dataclasses.replace`` for a settings dataclass whose ``__post_init__`` validates:
    unknown names raise ConfigError listing the allowed ones (``what``: "generation", ...)."""
    names = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; allowed: {sorted(names)}.")
    return dataclasses.replace(settings, **changes)


def validate_fields(settings) -> None:
    """Check every field of a settings dataclass against its metadata, in field order: a
    :func:`ranged` number (``None`` passes where the default is ``None``), one of ``choices``,
    a tuple of prompt-like ``texts`` (:func:`check_text`), or, without metadata, a bool.
    Raise ConfigError naming the value and its allowed range."""
    for f in dataclasses.fields(settings):
        value, limits = getattr(settings, f.name), f.metadata
        if not limits:                       # a switch
            if not isinstance(value, bool):
                raise ConfigError(f"{f.name} must be True or False, got {value!r}.")
        elif "choices" in limits:
            if value not in limits["choices"]:
                raise ConfigError(f"{f.name}={value!r} is not available; choose one of "
                                  f"{list(limits['choices'])}. {limits.get('hint', '')}".rstrip())
        elif "texts" in limits:
            if not isinstance(value, tuple):
                raise ConfigError(f"{f.name} must be a tuple of texts, got {value!r:.80}.")
            for i, text in enumerate(value):
                check_text(f"{f.name}[{i}]", text)
        elif value is not None or f.default is not None:
            check = check_int if limits["integer"] else check_range
            kwargs = {} if limits["integer"] else {"low_open": limits["low_open"],
                                                   "high_open": limits.get("high_open", False)}
            check(f.name, value, limits["low"], limits["high"], hint=limits["hint"], **kwargs)


def check_continuation(prompt_s: float, duration: float, window_s: float) -> None:
    """Raise ConfigError unless an audio prompt of ``prompt_s`` seconds can be continued to
    ``duration`` seconds in all (prompt included, as in audiocraft) by a decoder whose window
    holds ``window_s`` seconds: the prompt must be shorter than both.

    ``MusicGenerator.generate_continuation`` checks this in whole frames when it runs; the
    service checks the uploaded clip's seconds before queueing it (a 422 now, not a job that
    fails later): one rule, one message.
    """
    if not prompt_s < min(duration, window_s):
        raise ConfigError(f"the audio prompt lasts {prompt_s:.2f} s but duration={duration:g} s; "
                          f"duration is the total length, so it must be longer than the prompt "
                          f"(and the prompt shorter than the {window_s:g} s window).")


def check_text(name: str, text, tokenizer=None) -> str:
    """Return ``text`` if the text encoder may read it, else raise ConfigError saying why.

    A text must be a ``str`` with something besides white space, valid Unicode (encodable
    as UTF-8: a lone surrogate such as ``"\\ud800"`` is not), at most
    :data:`MAX_PROMPT_CHARS` characters and, counted with ``tokenizer`` when one is given, at
    most :data:`MAX_PROMPT_TOKENS` tokens.

    Args:
        name: what the text is, for the message (``"prompt 0"``, ``"negative_prompt"``).
        text: the value to check.
        tokenizer: a Hugging Face tokenizer (``model.tokenizer``); ``None`` skips the count.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{name} is {text!r:.80}; it must be non-empty text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise ConfigError(f"{name} has {len(text)} characters; allowed: 1 to {MAX_PROMPT_CHARS}. "
                          "MusicGen reads short descriptions: shorten it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{name} is not valid Unicode: character {exc.object[exc.start]!r} at "
                          f"position {exc.start} (a lone surrogate) cannot be encoded as UTF-8; "
                          "send plain text.") from None
    if tokenizer is not None:
        tokens = len(tokenizer(text)["input_ids"])
        if tokens > MAX_PROMPT_TOKENS:
            raise ConfigError(f"{name} is {tokens} text-encoder tokens; allowed: 1 to "
                              f"{MAX_PROMPT_TOKENS}. Shorten it (PromptEngineer.validate counts "
                              "tokens).")
    return text


@dataclass
class GenerationConfig:
    """How to sample. Defaults are audiocraft's ``MusicGen.set_generation_params`` defaults.

    Each numeric field carries its allowed range as field metadata
    (``dataclasses.fields(GenerationConfig)[i].metadata``: ``low``, ``high``, ``low_open``,
    ``integer``, ``hint``): :meth:`validate` checks against it and the widgets build their
    sliders from it, so the ranges are written once. ``duration`` in (0, 600] (long form past
    30 s), ``top_k`` in [0, 2048] (0 = off), ``top_p`` in [0, 1] (0 = off, applied after
    top-k), ``temperature`` in (0, 10], ``guidance_scale`` in [1, 30] (1 = off), ``seed`` in
    [0, 2**63 - 1] or None, ``extend_stride`` in (0, 30] and shorter than the model's
    window. Every number must be finite.
    ``sampler`` (metadata ``choices``) picks how tokens are drawn (sampling.py): ``"counter"``
    (default: the whole batch in one draw, per-item seeds, capturable in a CUDA graph) or
    ``"reference"`` (transformers' ``generate``, token for token).
    """

    duration: float = ranged(8.0, 0, 600, low_open=True, hint=_LONG_FORM)  # seconds per item
    use_sampling: bool = True       # False = greedy (argmax) decoding
    top_k: int = ranged(250, 0, 2048, integer=True,
                         hint="0 disables top-k filtering.")  # keep the k most likely tokens
    top_p: float = ranged(0.0, 0, 1, hint="0 disables nucleus filtering.")  # nucleus mass
    temperature: float = ranged(1.0, 0, 10, low_open=True, hint=_NOT_ZERO)  # softmax temperature
    guidance_scale: float = ranged(3.0, 1, 30, hint="1 turns classifier-free guidance off; "
                                    "MusicGen uses 3.")  # classifier-free guidance strength
    seed: int | None = ranged(None, 0, MAX_SEED, integer=True, hint="None draws a random "
                               "seed.")  # None = random (recorded); item i gets seed + i
    extend_stride: float = ranged(18.0, 0, 30, low_open=True, hint=(   # long-form advance, s
        "It must be shorter than the model's 30 s window; MusicGen uses 18."))
    sampler: str = field(default="counter", metadata=dict(choices=SAMPLERS, hint=(
        "'reference' draws exactly what transformers' generate draws.")))  # how tokens are drawn

    def __post_init__(self):
        self.validate()

    def validate(self) -> GenerationConfig:
        """Check every field; raise ConfigError naming the value and its allowed range."""
        validate_fields(self)
        return self

    def replace(self, **changes) -> GenerationConfig:
        """A validated copy with some fields changed; unknown names raise ConfigError."""
        return replace_fields(self, "generation", changes)


@dataclass
class Generation:
    """The result of one generate call: audio, tokens and how it was made."""

    wav: torch.Tensor               # [B, C, T] float32 on the CPU, in [-1, 1]
    sample_rate: int                # Hz
    tokens: torch.Tensor            # [B, K, S] EnCodec codes (prompt frames included)
    prompts: list                   # B text prompts (None = unconditional)
    config: GenerationConfig        # the settings used
    seeds: list[int]                # per-item seeds actually used
    model_name: str = ""
    timings: dict = field(default_factory=dict)  # load_s, first_step_s, steps, steps_per_s, ...

    def __len__(self) -> int:
        return self.wav.shape[0]

    @property
    def duration(self) -> float:
        """Seconds of audio per item."""
        return self.wav.shape[-1] / self.sample_rate

    def save(self, path: str | Path, overwrite: bool = False) -> list[Path]:
        """Write each item atomically: ``out.wav`` for one item, ``out_0.wav, out_1.wav`` for more."""
        from .audio import save_audio

        path = Path(path)
        if len(self) == 1:
            targets = [path]
        else:
            targets = [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(self))]
        return [save_audio(t, self.wav[i], self.sample_rate, overwrite=overwrite)
                for i, t in enumerate(targets)]

    def play(self, index: int = 0):
        """An IPython audio player for item ``index``."""
        from .audio import play

        return play(self.wav[index], self.sample_rate)

    def summary(self) -> str:
        t = self.timings
        return (f"{len(self)} x {self.duration:.2f} s at {self.sample_rate} Hz, tokens "
                f"{list(self.tokens.shape)}, {t.get('steps_per_s', 0):.1f} steps/s, "
                f"RTF {t.get('rtf', 0):.2f} (model {self.model_name}, seeds {self.seeds})")

    def _ipython_display_(self):  # notebooks: a summary line and one player per item
        from IPython.display import display

        print(self.summary())
        for i, prompt in enumerate(self.prompts):
            print(f"[{i}] {prompt!r}")
            display(self.play(i))
