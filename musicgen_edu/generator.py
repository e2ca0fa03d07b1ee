"""MusicGenerator: every way to make music with MusicGen (settings and results: generation.py;
a call's job, windows and progress: job.py).

The decoding loop lives here, written out once for all modes (text, unconditional,
continuation, melody, long form, streaming). Its steps follow audiocraft
``models/genmodel.py::_generate_tokens`` (long form by sliding windows) and
``models/lm.py::generate`` (delay pattern + CFG + sampling), and match transformers'
``MusicgenForConditionalGeneration.generate`` token for token (with
``sampler="reference"``; the default counter sampler draws the whole batch at once):

    prompts ──T5──► conditioning [N, L, D]          (N = 2B with classifier-free guidance)
    grid = build_delay_grid(prompt tokens, F)       [B, K, F + D + 1]  (patterns.py)
    for each column c:  logits = decoder(column c-1, KV cache)      [N, K, V]
                        logits = CFG, temperature, top-k, top-p      (sampling.py)
                        grid[:, :, c] = sample (where still unknown)
    each stage runs inside self._stage(name): a profiling label, free unless profiled
    tokens = undelay(grid)                          [B, K, F]
    wav = EnCodec.decode(tokens)                    [B, C, T]
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence

import torch

from .backends import Conditioning, get_backend
from .devices import synchronize
from .errors import ConfigError, GenerationError, check_range
from .generation import MAX_SEED, Generation, GenerationConfig, check_continuation, check_text
from .job import Job, Progress, Window, WindowPlan, plan_windows
from .models import DEFAULT_MODEL, MusicGenModel, load_model
from .patterns import UNKNOWN, codebook_delays
from .sampling import Sampling

__all__ = ["MusicGenerator"]  # GenerationConfig and Generation: generation.py (imported here too)

_UNLABELLED = contextlib.nullcontext()  # MusicGenerator._stage when nobody profiles


class MusicGenerator:
    """Generate music with a MusicGen model: text, unconditional, continuation, melody,
    long form past the 30 s window, and streaming.

    Example::

        gen = MusicGenerator("edu-tiny")                    # or "facebook/musicgen-small"
        # backend="native" (default: our decoder, token-identical to transformers and faster),
        # "native-int8" (int8 weights, use with dtype="bfloat16"), "transformers", or a backend
        # object such as NativeBackend(model, pack=False)
        out = gen.generate(["lo-fi piano", "epic drums"], duration=4, seed=0)
        out.wav.shape                                        # [2, 1, 128000]
        out.save("clip.wav")
    """

    def __init__(self, model: str | MusicGenModel = DEFAULT_MODEL, *, device: str = "auto",
                 dtype: str = "auto", backend="native",
                 config: GenerationConfig | None = None, progress: bool = True,
                 cache_dir: str | None = None):
        self.model = model if isinstance(model, MusicGenModel) else load_model(
            model, device=device, dtype=dtype, cache_dir=cache_dir)
        self.backend = get_backend(backend, self.model)
        self.config = config or GenerationConfig()
        self.progress = progress                       # show a tqdm bar by default
        self.stages = None                             # profiling labels (metrics.breakdown)
        self.max_duration = self.model.max_duration    # seconds per decoder window

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def set_params(self, **changes) -> GenerationConfig:
        """Change the default settings, e.g. ``gen.set_params(duration=10, top_k=50)``."""
        self.config = self.config.replace(**changes)
        return self.config

    # --- public generation modes ------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str | None], *, negative_prompt=None, seeds=None,
                 progress: bool | None = None, callback=None, **settings) -> Generation:
        """Generate one clip per prompt (a string or a list, batched together).

        Args:
            prompts: text prompt(s); ``None`` items are unconditional.
            negative_prompt: text(s) to steer away from: CFG uses them instead of the null
                condition (one string for all items, or one per item).
            seeds: one seed per item (overrides ``seed``).
            progress: show a progress bar (default: the generator's ``progress``).
            callback: called as ``callback(step, total)`` after every decoder step.
            **settings: any :class:`GenerationConfig` field, e.g. ``duration=10, seed=0``.
        """
        job = self._prepare(prompts, negative_prompt, seeds, settings)
        return self._complete(job, progress, callback)

    def generate_unconditional(self, num_samples: int = 1, **kwargs) -> Generation:
        """Generate without any text (the null condition; CFG has nothing to push against)."""
        check_range("num_samples", num_samples, 1, None)
        return self.generate([None] * int(num_samples), **kwargs)

    def generate_continuation(self, audio, sample_rate: int, prompts=None, *, negative_prompt=None,
                              seeds=None, progress=None, callback=None, **settings) -> Generation:
        """Continue an audio prompt ``[T]``, ``[C, T]`` or ``[B, C, T]`` (any sample rate).

        ``duration`` is the total length of the result, prompt included (as in audiocraft); the
        result's first frames are the prompt's own EnCodec tokens. Other arguments as in
        :meth:`generate`; ``prompts=None`` continues without text.
        """
        wav = self._as_batch(audio, sample_rate, "audio prompt")
        job = self._prepare([None] * wav.shape[0] if prompts is None else prompts,
                            negative_prompt, seeds, settings)
        wav = self._match_batch(wav, job, "audio prompts")
        tokens = self.backend.encode_audio(wav)        # [B, K, P]
        rate = self.model.frame_rate                   # checked in whole frames [frames/s]
        check_continuation(tokens.shape[-1] / rate, job.total_frames / rate,
                           int(self.max_duration * rate) / rate)
        job.prompt_tokens = tokens
        return self._complete(job, progress, callback)

    def generate_with_melody(self, prompts, melody, sample_rate: int, *, negative_prompt=None,
                             seeds=None, progress=None, callback=None, **settings) -> Generation:
        """Text + melody conditioning (melody models only): the chroma of ``melody`` guides pitch.

        ``melody`` is ``[T]``, ``[C, T]`` or ``[B, C, T]`` at any rate; other arguments as in
        :meth:`generate`. Past 30 s the melody is followed window by window.
        """
        from .chroma import chroma_features

        if not self.model.is_melody:
            raise GenerationError(f"{self.model.name!r} has no melody conditioning; load "
                                  "'facebook/musicgen-melody' (or 'debug-melody' offline).")
        wav = self._as_batch(melody, sample_rate, "melody")
        job = self._prepare(prompts, negative_prompt, seeds, settings)
        wav = self._match_batch(wav, job, "melodies")
        job.chroma = chroma_features(wav, self.sample_rate)      # [B, frames, 12]
        job.chroma_rate = job.chroma.shape[1] / (wav.shape[-1] / self.sample_rate)
        return self._complete(job, progress, callback)

    def stream(self, prompts, *, chunk_seconds: float = 1.0, negative_prompt=None, seeds=None,
               progress: bool | None = None, callback=None, **settings) -> Iterator[torch.Tensor]:
        """Yield decoded audio ``[B, C, t]`` while decoding runs; the chunks add up to the clip.

        Each chunk is decoded from all tokens so far and holds back the last few frames, whose
        samples still depend on tokens not generated yet (EnCodec's convolutions look ahead).
        """
        check_range("chunk_seconds", chunk_seconds, 0, None, low_open=True)
        job = self._prepare(prompts, negative_prompt, seeds, settings)
        hop = self.sample_rate // self.model.frame_rate
        every = max(1, round(chunk_seconds * self.model.frame_rate))
        lookahead, emitted, last_decode = 4, 0, 0          # frames held back; samples sent
        for done in self._iter_tokens(job, progress, callback):
            if done - last_decode >= every and done > lookahead:
                last_decode = done
                with self._stage("audio decode"):
                    wav = self.backend.decode_audio(self._tokens_so_far(job, done)).cpu()
                end = (done - lookahead) * hop
                if end > emitted:
                    yield wav[..., emitted:end].clamp(-1, 1)
                    emitted = end
        with self._stage("audio decode"):
            wav = self.backend.decode_audio(torch.cat(job.finished, dim=-1)).cpu()
        yield wav[..., emitted:].clamp(-1, 1)

    # --- preparation ------------------------------------------------------------------------
    def _prepare(self, prompts, negative_prompt, seeds, settings) -> Job:
        cfg = self.config.replace(**settings) if settings else self.config
        if isinstance(prompts, str) or prompts is None:
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ConfigError("prompts is empty; pass a string or a list of at least one prompt.")
        tokenizer = self.model.tokenizer        # every text is bounded before the encoder
        for i, p in enumerate(prompts):
            if p is not None:
                check_text(f"prompt {i}", p, tokenizer)
        negatives = self._per_item(negative_prompt, len(prompts), "negative_prompt")
        for i, n in enumerate(negatives):
            if n is not None:
                check_text(f"negative_prompt {i}" if len(negatives) > 1 else "negative_prompt",
                           n, tokenizer)
        if seeds is None:
            base = cfg.seed if cfg.seed is not None else random.randrange(2**31)
            seeds = [base + i for i in range(len(prompts))]
        seeds = [int(s) for s in self._per_item(seeds, len(prompts), "seeds")]
        for s in seeds:
            check_range("seed", s, 0, MAX_SEED)
        frames = max(1, round(cfg.duration * self.model.frame_rate))
        window = int(self.max_duration * self.model.frame_rate)
        stride = int(cfg.extend_stride * self.model.frame_rate)
        if frames > window and not 0 < stride < window:  # long form needs 0 < stride < window
            raise ConfigError(f"extend_stride={cfg.extend_stride} s must be shorter than the "
                              f"model's window of {self.max_duration} s and at least one frame "
                              f"(1/{self.model.frame_rate} s); MusicGen uses 18 of 30 s.")
        gens = [torch.Generator(device=self.model.device).manual_seed(s) for s in seeds]
        seed_tensor = torch.tensor(seeds, dtype=torch.long, device=self.model.device)
        return Job(prompts, negatives, cfg, seeds, gens, seed_tensor, frames)

    @staticmethod
    def _per_item(value, n: int, name: str) -> list:
        if value is None or isinstance(value, (str, int)):
            return [value] * n
        value = list(value)
        if len(value) != n:
            raise ConfigError(f"{name} has {len(value)} items for {n} prompts; give one per "
                              "prompt, or a single value for all.")
        return value

    @staticmethod
    def _match_batch(wav: torch.Tensor, job: Job, what: str) -> torch.Tensor:
        """One audio item per prompt; a single item is shared by all prompts."""
        if wav.shape[0] == 1:
            return wav.expand(len(job.prompts), -1, -1)
        if wav.shape[0] != len(job.prompts):
            raise ConfigError(f"got {wav.shape[0]} {what} for {len(job.prompts)} prompts; pass "
                              "one per prompt, or one for all.")
        return wav

    def _as_batch(self, audio, sample_rate: int, what: str) -> torch.Tensor:
        """Audio ``[T]``/``[C, T]``/``[B, C, T]`` at any rate -> ``[B, C, T]`` at the model's rate."""
        from .audio import resample
        from .errors import AudioError

        check_range(f"{what} sample_rate", sample_rate, 0, None, low_open=True)
        wav = torch.as_tensor(audio, dtype=torch.float32)
        if wav.dim() not in (1, 2, 3) or wav.shape[-1] == 0:
            raise AudioError(f"{what} must be a non-empty [T], [C, T] or [B, C, T] waveform, got "
                             f"shape {list(wav.shape)}.")
        while wav.dim() < 3:
            wav = wav.unsqueeze(0)
        if not torch.isfinite(wav).all():
            raise AudioError(f"{what} contains NaN or infinite samples.")
        if sample_rate != self.sample_rate:
            wav = torch.as_tensor(resample(wav.numpy(), int(sample_rate), self.sample_rate))
        return wav

    # --- the decoding loop ------------------------------------------------------------------
    def _plan(self, job: Job) -> list[WindowPlan]:
        """This job's windows (``job.plan_windows``): one, or sliding ones for long form."""
        rate = self.model.frame_rate
        prompt = 0 if job.prompt_tokens is None else job.prompt_tokens.shape[-1]
        return plan_windows(job.total_frames, int(self.max_duration * rate),
                            int(job.config.extend_stride * rate), prompt)

    def _conditioning(self, job: Job, offset: int) -> Conditioning:
        """Conditioning rows ``[cond; uncond]`` (2B) with CFG, or ``cond`` (B) without."""
        batch = len(job.prompts)
        chroma = None
        if job.chroma is not None:  # the part of the melody under this window
            start = int(offset / self.model.frame_rate * job.chroma_rate)
            chroma = job.chroma[:, start:] if start < job.chroma.shape[1] else job.chroma
        has_condition = (any(p is not None for p in job.prompts) or chroma is not None
                         or any(n is not None for n in job.negatives))
        if job.config.guidance_scale > 1 and has_condition:
            texts = job.prompts + job.negatives
            melody_mask = [True] * batch + [False] * batch
            chroma = None if chroma is None else torch.cat([chroma, chroma])
        else:
            texts, melody_mask = job.prompts, [True] * batch
        with self._stage("text encoding"):
            return self.backend.encode_text(texts, chroma=chroma, melody_mask=melody_mask)

    def _stage(self, name: str):
        """A profiling label around one stage of the loop (``metrics.breakdown`` sets
        ``self.stages``); otherwise a shared no-op context, free in the decoding loop."""
        return _UNLABELLED if self.stages is None else self.stages(name)

    @staticmethod
    def _sampling(job: Job) -> Sampling:
        """How this job draws tokens from logits (fixed for the whole generation)."""
        cfg = job.config
        return Sampling(batch=len(job.prompts), guidance_scale=cfg.guidance_scale,
                        use_sampling=cfg.use_sampling, temperature=cfg.temperature,
                        top_k=cfg.top_k, top_p=cfg.top_p, sampler=cfg.sampler)

    def _window(self, job: Job, cond: Conditioning, window: Window) -> Iterator[int]:
        """Decode one window; after each step yield how many of its frames are complete."""
        with self._stage("text encoding"):                 # text keys/values, once per window
            state = self.backend.start(cond, max_len=window.grid.shape[-1])
        guided = len(cond) == 2 * len(job.prompts)
        feed = window.grid[:, :, : window.prompt_len + 1]  # prefill: BOS column + prompt
        try:
            yield from self._columns(job, state, window.grid, feed, guided)
        finally:
            self.backend.release(state)                    # pooled buffers go back (native)

    def _columns(self, job: Job, state, grid: torch.Tensor, feed: torch.Tensor,
                 guided: bool) -> Iterator[int]:
        """The decoding loop of one window: fill grid column by column (see the docstring).

        A backend that can run the sampling inside its captured step (``fuses_draw``: the
        native decoder's fixed-shape steps, with the counter sampler or greedy decoding) gets
        the whole step at once, ``step_draw``: decoder, CFG, filters and draw in one launch.
        """
        stage, sampling = self._stage, self._sampling(job)
        fused = self.backend.fuses_draw and sampling.capturable
        max_delay = max(codebook_delays(self.model.num_codebooks, self.model.audio_channels))
        for col in range(feed.shape[-1], grid.shape[-1]):
            with stage("codebook pattern"):
                rows = feed.repeat(2, 1, 1) if guided else feed             # [N, K, s]
            if fused:
                with stage("decoder step"):                                 # + sampling
                    sampled = self.backend.step_draw(rows, state, sampling, job.seed_tensor,
                                                     job.step)              # [B, K]
            else:
                with stage("decoder step"):
                    logits = self.backend.step(rows, state)                 # [N, K, V]
                with stage("sampling"):
                    sampled = sampling.draw(logits, job.seed_tensor, job.step,
                                            job.generators)                 # [B, K]
            with stage("codebook pattern"):
                known = grid[:, :, col]                    # prompt tokens and specials win
                grid[:, :, col] = torch.where(known == UNKNOWN, sampled, known)
                feed = grid[:, :, col: col + 1]
            job.step += 1
            yield col - max_delay

    def _iter_tokens(self, job: Job, progress: bool | None, callback) -> Iterator[int]:
        """Run every window; yield the number of output frames complete after each step."""
        batch, k = len(job.prompts), self.model.num_codebooks
        channels = self.model.audio_channels
        prompt = job.prompt_tokens
        if prompt is None:
            prompt = torch.zeros(batch, k, 0, dtype=torch.long, device=self.model.device)
        job.finished = [prompt] if prompt.shape[-1] else []
        plan = self._plan(job)
        max_delay = max(codebook_delays(k, channels))
        bar = Progress(sum(w.frames + max_delay - w.prompt_frames for w in plan),
                        self.progress if progress is None else progress, callback)
        start = time.perf_counter()
        try:
            for span in plan:
                cond = self._conditioning(job, span.offset)
                with self._stage("codebook pattern"):
                    window = job.window = Window.open(prompt, span.frames,
                                                      self.model.special_token, channels)
                for done in self._window(job, cond, window):
                    bar.update()
                    if job.first_step_s is None:
                        synchronize(self.model.device)
                        job.first_step_s = time.perf_counter() - start
                    yield span.offset + max(0, done)
                with self._stage("codebook pattern"):
                    tokens = window.tokens(channels)                    # [B, K, frames]
                job.finished.append(tokens[..., window.prompt_len:])
                job.window = None
                prompt = tokens[..., int(job.config.extend_stride * self.model.frame_rate):]
        finally:
            bar.close()

    def _tokens_so_far(self, job: Job, done: int) -> torch.Tensor:
        """The first ``done`` complete output frames ``[B, K, done]`` (for streaming)."""
        parts = list(job.finished)
        window = job.window
        if window is not None:
            parts.append(window.tokens(self.model.audio_channels)[..., window.prompt_len:])
        return torch.cat(parts, dim=-1)[..., :done]

    def _complete(self, job: Job, progress, callback) -> Generation:
        start, captured = time.perf_counter(), self.backend.capture_s
        steps = sum(1 for _ in self._iter_tokens(job, progress, callback))
        synchronize(self.model.device)
        decode_start = time.perf_counter()
        tokens = torch.cat(job.finished, dim=-1)                          # [B, K, F]
        with self._stage("audio decode"):
            wav = self.backend.decode_audio(tokens).cpu()                 # [B, C, T]
        wav = wav[..., : job.total_frames * (self.sample_rate // self.model.frame_rate)]
        end = time.perf_counter()
        gen_s, audio_s = decode_start - start, wav.shape[-1] / self.sample_rate
        timings = dict(load_s=self.model.load_seconds, first_step_s=job.first_step_s,
                       steps=steps, generate_s=gen_s, steps_per_s=steps / max(gen_s, 1e-9),
                       decode_s=end - decode_start, total_s=end - start,
                       rtf=(end - start) / audio_s,
                       capture_s=self.backend.capture_s - captured,
                       decoder=self.backend.path)
        return Generation(wav=wav.clamp(-1, 1), sample_rate=self.sample_rate, tokens=tokens.cpu(),
                          prompts=job.prompts, config=job.config, seeds=job.seeds,
                          model_name=self.model.name, timings=timings)
