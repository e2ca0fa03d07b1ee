"""audiocraft's ``MusicGen`` class on our generator: same names, arguments, defaults, returns.

Follows audiocraft 1.3.0 ``audiocraft/models/musicgen.py`` (``MusicGen``) and
``audiocraft/models/genmodel.py`` (``BaseGenModel``: ``generate``, ``generate_unconditional``,
``generate_continuation``, ``set_custom_progress_callback``, the properties). Every call goes
to :class:`musicgen_edu.generator.MusicGenerator` (so to our backends); only the arguments are
translated. The path of one call::

    model.generate(["lo-fi piano"], progress=True, return_tokens=True)
      seeds  = one per item, drawn from torch's global RNG    (torch.manual_seed reproduces)
      config = set_generation_params(...) as a GenerationConfig (cfg_coef -> guidance_scale)
      out    = MusicGenerator.generate(descriptions, seeds=seeds, callback=<audiocraft's>)
      return out.wav [B, C, T] on model.device, and out.tokens [B, K, S] if return_tokens

What differs from audiocraft, and why, is in ``docs/audiocraft.md``: ``two_step_cfg=True``
runs as one batched pass (the same guidance formula; a warning says so), output is clipped to
[-1, 1] (our generator's contract), and ``MultiBandDiffusion`` is not available.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from ..errors import AudioError, ConfigError, GenerationError, check_range
from ..generation import MAX_SEED, Generation
from ..generator import MusicGenerator
from ..job import plan_windows
from ..patterns import codebook_delays
from .data.audio_utils import convert_audio_channels

__all__ = ["MusicGen", "MultiBandDiffusion", "draw_seeds", "HF_MODEL_CHECKPOINTS_MAP"]

# audiocraft's backward-compatible short names (musicgen.py `_HF_MODEL_CHECKPOINTS_MAP`)
HF_MODEL_CHECKPOINTS_MAP = {
    "small": "facebook/musicgen-small",
    "medium": "facebook/musicgen-medium",
    "large": "facebook/musicgen-large",
    "melody": "facebook/musicgen-melody",
}
ProgressCallback = Callable[[int, int], None]   # (generated_tokens, tokens_to_generate)


def draw_seeds(num_samples: int) -> list[int]:
    """One seed per item from torch's global RNG: audiocraft samples with the global RNG, so
    ``torch.manual_seed(0)`` before a call makes it reproducible; here it fixes these seeds."""
    return torch.randint(0, MAX_SEED, (num_samples,)).tolist()


def _descriptions(descriptions, what: str = "descriptions") -> list[str | None]:
    """A list of texts; ``""`` and ``None`` are the null condition (audiocraft's T5 conditioner
    masks empty texts out, so ``""`` means the same as ``None`` there)."""
    if isinstance(descriptions, str) or not isinstance(descriptions, Sequence):
        raise ConfigError(f"{what} must be a list of strings (one per sample), got "
                          f"{descriptions!r:.80}; write [{descriptions!r:.60}].")
    if len(descriptions) == 0:
        raise ConfigError(f"{what} is empty; pass at least one description.")
    return [None if d is None or d == "" else d for d in descriptions]


def _as_3d(wav, what: str) -> torch.Tensor:
    """``[C, T]`` -> ``[1, C, T]``; ``[B, C, T]`` kept; anything else is refused."""
    if not isinstance(wav, torch.Tensor):
        raise AudioError(f"{what} must be a torch.Tensor [B, C, T] or [C, T], got "
                         f"{type(wav).__name__}.")
    if wav.dim() == 2:
        wav = wav[None]
    if wav.dim() != 3:
        raise AudioError(f"{what} should have 3 dimensions [B, C, T] (or [C, T] for one "
                         f"sample), got shape {list(wav.shape)}.")
    return wav


class MultiBandDiffusion:
    """audiocraft's diffusion decoder (``models/multibanddiffusion.py``) is not part of
    musicgen_edu; the class exists so the demo's import line works, and says so when used."""

    @staticmethod
    def get_mbd_musicgen(device=None):
        raise GenerationError("MultiBandDiffusion is not available in musicgen_edu; decode "
                              "tokens with EnCodec (model.generate_audio(tokens)), or install "
                              "audiocraft for the diffusion decoder.")


class MusicGen:
    """audiocraft's ``MusicGen`` API running on :class:`MusicGenerator`.

    Example::

        from musicgen_edu.audiocraft_api.models import MusicGen
        model = MusicGen.get_pretrained("debug")          # or "facebook/musicgen-small"
        model.set_generation_params(duration=2)
        wav = model.generate(["lo-fi piano"])             # [1, 1, 64000] at model.sample_rate

    Args:
        name: the model name (as given to :meth:`get_pretrained`).
        generator: the :class:`MusicGenerator` that runs every call.
        max_duration: seconds one decoder window holds (default: the model's, 30).
    """

    def __init__(self, name: str, generator: MusicGenerator, max_duration: float | None = None):
        self.name = name
        self.generator = generator
        self.max_duration: float = float(max_duration or generator.max_duration)
        self.device = generator.model.device
        self.last_generation: Generation | None = None  # seeds and timings of the last call
        self._progress_callback: ProgressCallback | None = None
        self.set_generation_params(duration=15)         # audiocraft: 15 seconds by default

    # --- properties (genmodel.py) -----------------------------------------------------------
    @property
    def frame_rate(self) -> int:
        """Token frames (decoder steps of one codebook) per second: 50 for MusicGen."""
        return self.generator.model.frame_rate

    @property
    def sample_rate(self) -> int:
        """Hz of the generated audio: 32000 for MusicGen."""
        return self.generator.sample_rate

    @property
    def audio_channels(self) -> int:
        """C of the ``[B, C, T]`` output: 1, or 2 for stereo models."""
        return self.generator.model.audio_channels

    @staticmethod
    def get_pretrained(name: str = "facebook/musicgen-melody", device=None) -> MusicGen:
        """Load a model by audiocraft's names, or any name ``load_model`` knows.

        ``facebook/musicgen-*`` hub ids load as they are; the short names ``small``,
        ``medium``, ``large``, ``melody`` map to them with audiocraft's deprecation warning;
        ``debug``, ``debug-stereo`` and ``debug-melody`` are our offline models (random
        weights, no download). ``device=None`` picks CUDA when present, else the CPU.
        """
        if name in HF_MODEL_CHECKPOINTS_MAP:
            warnings.warn("MusicGen pretrained model relying on deprecated checkpoint mapping. "
                          f"Please use full pre-trained id instead: facebook/musicgen-{name}",
                          stacklevel=2)
            name = HF_MODEL_CHECKPOINTS_MAP[name]
        generator = MusicGenerator(name, device="auto" if device is None else str(device),
                                   progress=False)
        return MusicGen(name, generator)

    def set_generation_params(self, use_sampling: bool = True, top_k: int = 250,
                              top_p: float = 0.0, temperature: float = 1.0,
                              duration: float = 30.0, cfg_coef: float = 3.0,
                              two_step_cfg: bool = False, extend_stride: float = 18) -> None:
        """Set every generation parameter at once; those not given return to their defaults
        (as in audiocraft). Checked now, so a bad value fails here with a clear message.

        Args:
            use_sampling: sample if True, else argmax (greedy) decoding.
            top_k: keep the k most likely tokens (0 = off); ignored when ``top_p > 0``.
            top_p: nucleus mass; when > 0 it replaces top-k (audiocraft's rule).
            temperature: softmax temperature; ``<= 0`` means greedy decoding (audiocraft).
            duration: seconds of audio (prompt included for continuations); past
                ``max_duration`` the model extends by sliding windows.
            cfg_coef: classifier-free guidance coefficient, ``guidance_scale`` in
                ``GenerationConfig``; allowed 1 to 30 (1 = no guidance).
            two_step_cfg: audiocraft's two forward passes for CFG; here one batched pass with
                the same formula (a warning says so).
            extend_stride: seconds each long-form window advances; must be < ``max_duration``.
        """
        check_range("extend_stride", extend_stride, 0, self.max_duration, low_open=True,
                    high_open=True, hint=f"Cannot stride by more than the model's "
                                         f"{self.max_duration:g} s window; MusicGen uses 18.")
        check_range("cfg_coef", cfg_coef, 1, 30, hint="musicgen_edu runs guidance_scale in "
                    "[1, 30]; 1 turns guidance off, MusicGen uses 3.")
        check_range("duration", duration, 0, None, low_open=True)
        frames = int(duration * self.frame_rate)        # audiocraft: int(duration * frame_rate)
        if frames < 1:
            raise ConfigError(f"duration={duration!r} s is less than one token frame "
                              f"(1/{self.frame_rate} s); ask for at least "
                              f"{1 / self.frame_rate:g} s.")
        for flag, value in (("use_sampling", use_sampling), ("two_step_cfg", two_step_cfg)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be True or False, got {value!r}.")
        if two_step_cfg:
            warnings.warn("two_step_cfg=True: musicgen_edu computes classifier-free guidance "
                          "in one batched pass [cond; uncond] with attention masks, which is "
                          "the same formula uncond + cfg_coef * (cond - uncond).", stacklevel=2)
        check_range("top_p", top_p, 0, 1, hint="0 turns nucleus sampling off (then top_k is used).")
        check_range("temperature", temperature, None, 10, hint="<= 0 means greedy decoding.")
        greedy = not use_sampling or temperature <= 0  # audiocraft: argmax unless both
        self.generator.config = self.generator.config.replace(
            duration=frames / self.frame_rate,           # whole frames, as audiocraft counts
            use_sampling=not greedy, temperature=1.0 if greedy else float(temperature),
            top_k=0 if top_p > 0 else top_k,             # top_p > 0 replaces top-k
            top_p=float(top_p), guidance_scale=float(cfg_coef),
            extend_stride=float(extend_stride), seed=None)  # seeds: draw_seeds per call
        self.duration, self.extend_stride = duration, extend_stride
        self.generation_params = {"use_sampling": use_sampling, "temp": temperature,
                                  "top_k": top_k, "top_p": top_p, "cfg_coef": cfg_coef,
                                  "two_step_cfg": two_step_cfg}

    def set_custom_progress_callback(self, progress_callback: ProgressCallback | None = None):
        """Call ``progress_callback(generated_tokens, tokens_to_generate)`` instead of printing
        progress; as in audiocraft it runs only when a generate method gets ``progress=True``."""
        self._progress_callback = progress_callback

    # --- generation modes -------------------------------------------------------------------
    def generate_unconditional(self, num_samples: int, progress: bool = False,
                               return_tokens: bool = False):
        """``num_samples`` clips without any conditioning: ``wav [B, C, T]`` (and tokens)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive int, got {num_samples!r}.")
        return self._run(lambda **kw: self.generator.generate([None] * num_samples, **kw),
                         num_samples, progress, return_tokens)

    def generate(self, descriptions: list[str], progress: bool = False,
                 return_tokens: bool = False):
        """One clip per description: ``wav [B, C, T]``, or ``(wav, tokens [B, K, S])``."""
        texts = _descriptions(descriptions)
        return self._run(lambda **kw: self.generator.generate(texts, **kw),
                         len(texts), progress, return_tokens)

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: list[str | None] | None = None,
                              progress: bool = False, return_tokens: bool = False):
        """Continue audio prompts ``[B, C, T]`` (or ``[C, T]`` for one) at any sample rate.

        The result lasts ``duration`` in all and starts with the prompt (re-encoded by EnCodec),
        as in audiocraft. ``descriptions`` (one per prompt, ``None`` items allowed) adds text.
        """
        wav = self._to_model_channels(_as_3d(prompt, "prompt"), "prompt")
        texts = [None] * len(wav) if descriptions is None else _descriptions(descriptions)
        if len(texts) != len(wav):
            raise ConfigError(f"got {len(wav)} prompts for {len(texts)} descriptions; pass one "
                              "description per prompt (or descriptions=None).")
        return self._run(lambda **kw: self.generator.generate_continuation(
            wav, prompt_sample_rate, texts, **kw), len(texts), progress, return_tokens)

    def generate_with_chroma(self, descriptions: list[str], melody_wavs, melody_sample_rate: int,
                             progress: bool = False, return_tokens: bool = False):
        """Text + melody (melody models): ``melody_wavs`` is ``[B, C, T]``, ``[C, T]`` for one
        description, or a list of ``[C, T]`` tensors where ``None`` means "no melody"."""
        if not self.generator.model.is_melody:
            raise GenerationError(f"{self.name!r} doesn't support melody conditioning; use the "
                                  "'facebook/musicgen-melody' model ('debug-melody' offline).")
        texts = _descriptions(descriptions)
        if isinstance(melody_wavs, torch.Tensor):
            melodies = list(_as_3d(melody_wavs, "melody_wavs"))
        else:
            melodies = list(melody_wavs)
            for i, m in enumerate(melodies):
                if m is not None and (not isinstance(m, torch.Tensor) or m.dim() != 2):
                    raise AudioError(f"melody_wavs[{i}] must be a [C, T] tensor or None, got "
                                     f"{getattr(m, 'shape', type(m).__name__)}.")
        if len(melodies) != len(texts):
            raise ConfigError(f"number of melody wavs must match number of descriptions: got "
                              f"{len(melodies)} melodies and {len(texts)} descriptions.")
        melodies = [None if m is None else self._to_model_channels(m[None], "melody")[0]
                    for m in melodies]
        # Items whose melodies share a length run together; None items run without a melody.
        groups: dict = {}
        for i, m in enumerate(melodies):
            groups.setdefault(None if m is None else m.shape[-1], []).append(i)

        def run(seeds, **kw):
            parts = []
            for length, items in groups.items():
                sub_texts, sub_seeds = [texts[i] for i in items], [seeds[i] for i in items]
                if length is None:
                    out = self.generator.generate(sub_texts, seeds=sub_seeds, **kw)
                else:
                    wav = torch.stack([melodies[i] for i in items])              # [b, C, T]
                    out = self.generator.generate_with_melody(
                        sub_texts, wav, melody_sample_rate, seeds=sub_seeds, **kw)
                parts.append((items, out))
            return _merge(parts, len(texts))

        return self._run(run, len(texts), progress, return_tokens)

    def generate_audio(self, gen_tokens: torch.Tensor) -> torch.Tensor:
        """Decode tokens ``[B, K, S]`` with EnCodec to audio ``[B, C, T]``."""
        if not isinstance(gen_tokens, torch.Tensor) or gen_tokens.dim() != 3:
            raise ConfigError(f"gen_tokens must be a [B, K, S] tensor, got "
                              f"{getattr(gen_tokens, 'shape', type(gen_tokens).__name__)}.")
        with torch.no_grad():
            return self.generator.backend.decode_audio(gen_tokens.to(self.device))

    # --- translation ------------------------------------------------------------------------
    def _to_model_channels(self, wav: torch.Tensor, what: str) -> torch.Tensor:
        """audiocraft's ``convert_audio_channels`` to the model's channel count."""
        try:
            return convert_audio_channels(wav.float().cpu(), self.audio_channels)
        except ValueError as exc:
            raise AudioError(f"{what} has {wav.shape[-2]} channels and the model wants "
                             f"{self.audio_channels}: {exc}") from None

    def _progress(self) -> Callable[[int, int], None]:
        """Our ``callback(step, total)`` over all windows -> audiocraft's per-window call
        ``(generated_tokens + window offset, tokens to generate in this window)``."""
        rate, cfg = self.frame_rate, self.generator.config
        total_frames = round(cfg.duration * rate)
        plan = plan_windows(total_frames, int(self.max_duration * rate),
                            int(cfg.extend_stride * rate))
        delay = max(codebook_delays(self.generator.model.num_codebooks, self.audio_channels))
        steps = [w.frames + delay - w.prompt_frames for w in plan]  # per window, no audio prompt
        user = self._progress_callback

        def callback(step: int, total: int) -> None:
            if step == 1:   # the audio prompt's frames are only known now: window 0 skips them
                steps[0] -= sum(steps) - total
            i, start = 0, 0
            while i + 1 < len(steps) and step > start + steps[i]:
                start, i = start + steps[i], i + 1
            done, todo = step - start + plan[i].offset, steps[i]
            if user is not None:
                user(done, todo)
            else:
                print(f"{done: 6d} / {todo: 6d}", end="\r")

        return callback

    def _run(self, call, num_samples: int, progress: bool, return_tokens: bool):
        """Draw seeds, run ``call`` on the generator, return audiocraft's result."""
        seeds = draw_seeds(num_samples)
        out = call(seeds=seeds, callback=self._progress() if progress else None, progress=False)
        self.last_generation = out
        wav = out.wav.to(self.device)                                      # [B, C, T]
        if return_tokens:
            return wav, out.tokens.to(self.device)                         # [B, K, S]
        return wav


def _merge(parts: list[tuple[list[int], Generation]], n: int) -> Generation:
    """Put the items of several generations back in their original order."""
    first = parts[0][1]
    wav = torch.empty((n, *first.wav.shape[1:]), dtype=first.wav.dtype)
    tokens = torch.empty((n, *first.tokens.shape[1:]), dtype=first.tokens.dtype)
    seeds, prompts = [0] * n, [None] * n
    for items, gen in parts:
        for j, i in enumerate(items):
            wav[i], tokens[i], seeds[i], prompts[i] = gen.wav[j], gen.tokens[j], \
                gen.seeds[j], gen.prompts[j]
    return Generation(wav=wav, sample_rate=first.sample_rate, tokens=tokens, prompts=prompts,
                      config=first.config, seeds=seeds, model_name=first.model_name,
                      timings=first.timings)

