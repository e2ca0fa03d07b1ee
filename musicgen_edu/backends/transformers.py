"""The reference backend: transformers' MusicGen modules driven one decoder step at a time.

The generator (``generator.py``) owns the loop (delay pattern, CFG, sampling, long form,
streaming); this file only runs the network, exactly as transformers' own
``MusicgenForConditionalGeneration.generate`` does internally (``models/musicgen/
modeling_musicgen.py``: ``_prepare_text_encoder_kwargs_for_generation``, ``forward``,
``_prepare_audio_encoder_kwargs_for_generation``; and the melody variant's
``_prepare_encoder_hidden_states_kwargs_for_generation``), so tokens match ``generate`` bit for
bit under the same seed (``tests/test_generator.py`` checks it).

Two conditioning styles:
* text models cross-attend to T5 states ``[B, L, D]`` (with a padding mask);
* melody models prepend ``[chroma frames; text states]`` to the decoder input as a prefix,
  fed once at the first step and then remembered by the KV cache.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from .contract import Backend, Conditioning

__all__ = ["DecoderState", "TransformersEncoders", "TransformersBackend"]


@dataclass
class DecoderState:
    """KV cache and conditioning of one running generation."""

    cond: Conditioning
    cache: object | None = None     # transformers EncoderDecoderCache, filled by the first step
    steps: int = 0                  # decoder positions already in the cache


class TransformersEncoders(Backend):
    """What every backend over a transformers MusicGen shares: text (and melody) encoding
    and EnCodec, with transformers' modules. A backend adds ``start`` and ``step``: the
    decoder (here :class:`TransformersBackend`; ``native_backend.NativeBackend``)."""

    def __init__(self, model):
        self.mg = model
        self.net = model.model

    # --- conditioning ---------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str | None], chroma: torch.Tensor | None = None,
                    melody_mask: list[bool] | None = None) -> Conditioning:
        """T5-encode prompts; ``None`` rows get the null (all-zero, masked) condition.

        Args:
            texts: N prompts (``None`` = unconditional row).
            chroma: melody models only, ``[N, frames, 12]`` chroma features.
            melody_mask: melody models only, False rows use the null melody.
        """
        dev, dtype = self.mg.device, self.mg.dtype
        given = [t for t in texts if t is not None]
        hidden_size = self.net.config.text_encoder.hidden_size
        if given:
            enc = self.mg.tokenizer(given, padding=True, return_tensors="pt").to(dev)
            out = self.net.text_encoder(input_ids=enc["input_ids"],
                                        attention_mask=enc["attention_mask"]).last_hidden_state
            states = torch.zeros(len(texts), out.shape[1], hidden_size, dtype=out.dtype, device=dev)
            mask = torch.zeros(len(texts), out.shape[1], dtype=torch.long, device=dev)
            rows = torch.tensor([i for i, t in enumerate(texts) if t is not None], device=dev)
            states[rows], mask[rows] = out, enc["attention_mask"]
        else:  # transformers' get_unconditional_inputs: one zero state, masked out
            states = torch.zeros(len(texts), 1, hidden_size, dtype=dtype, device=dev)
            mask = torch.zeros(len(texts), 1, dtype=torch.long, device=dev)
        if self.net.text_encoder.config.hidden_size != self.net.decoder.config.hidden_size:
            states = self.net.enc_to_dec_proj(states)
        states = states * mask[..., None]
        if not self.mg.is_melody:
            return Conditioning(states=states, mask=mask)
        return Conditioning(states=torch.cat([self._melody_states(chroma, melody_mask, len(texts)),
                                              states], dim=1), mask=None, prefix=True)

    def _melody_states(self, chroma, melody_mask, n) -> torch.Tensor:
        """Project chroma ``[N, frames, 12]`` and tile/trim it to ``chroma_length`` frames."""
        cfg, dev, dtype = self.net.config, self.mg.device, self.mg.dtype
        null = torch.zeros(n, 1, cfg.num_chroma, device=dev, dtype=dtype)
        null[:, :, 0] = 1  # transformers' "no melody" features
        if chroma is None:
            feats = null
        else:
            feats = chroma.to(dev, dtype)
            keep = torch.tensor(melody_mask if melody_mask is not None else [True] * n, device=dev)
            feats = torch.where(keep[:, None, None], feats, null.expand_as(feats))
        states = self.net.audio_enc_to_dec_proj(feats)
        if states.shape[1] < cfg.chroma_length:
            states = states.repeat(1, math.ceil(cfg.chroma_length / states.shape[1]), 1)
        return states[:, : cfg.chroma_length]

    # --- audio <-> tokens -----------------------------------------------------------------
    @torch.no_grad()
    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """EnCodec-encode waveforms ``[B, C, T]`` at the model's rate into tokens ``[B, K, S]``."""
        codec = self.net.audio_encoder
        wav = wav.to(self.mg.device, torch.float32)
        if self.mg.audio_channels == 1:
            return codec.encode(wav.mean(dim=1, keepdim=True)).audio_codes[0]
        if wav.shape[1] == 1:
            wav = wav.repeat(1, 2, 1)
        left = codec.encode(wav[:, :1]).audio_codes[0]    # [B, K/2, S]
        right = codec.encode(wav[:, 1:2]).audio_codes[0]
        return torch.stack([left, right], dim=2).flatten(1, 2)  # [L0, R0, L1, R1, ...]

    @torch.no_grad()
    def decode_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """EnCodec-decode tokens ``[B, K, S]`` into float32 waveforms ``[B, C, T]``."""
        codec, batch = self.net.audio_encoder, tokens.shape[0]
        tokens = tokens.to(self.mg.device)

        def run(codes):  # EnCodec wants [frames=1, B, K, S]
            return codec.decode(codes[None], [None] * batch).audio_values.float()

        if self.mg.audio_channels == 1:
            return run(tokens)
        return torch.cat([run(tokens[:, ::2]), run(tokens[:, 1::2])], dim=1)


class TransformersBackend(TransformersEncoders):
    """Runs a :class:`~musicgen_edu.models.MusicGenModel` with the transformers modules.

    The contract and the optional capabilities (none here: the defaults) are :class:`Backend`'s.
    """

    name = path = "transformers"

    def __init__(self, model):
        super().__init__(model)
        params = inspect.signature(self.net.decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # --- decoding -------------------------------------------------------------------------
    def start(self, cond: Conditioning, max_len: int | None = None) -> DecoderState:
        """A fresh decoder state (empty KV cache) for ``len(cond)`` rows.

        ``max_len`` (decoder positions the generation will use) lets backends with a static
        cache preallocate it; transformers' cache grows by itself and ignores it.
        """
        return DecoderState(cond=cond)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Feed delayed-grid columns ``[N, K, s]``; return the last position's logits ``[N, K, V]``.

        The first call may feed several columns at once (a prompt "prefill"); later calls feed
        one column each, reusing the KV cache.
        """
        n, k, s = tokens.shape
        kwargs = {self._cache_kw: state.cache, "use_cache": True}
        cond = state.cond
        if cond.prefix:  # melody: the prefix enters once, then lives in the KV cache
            kwargs["encoder_hidden_states"] = cond.states if state.steps == 0 else None
        else:
            kwargs.update(encoder_hidden_states=cond.states, encoder_attention_mask=cond.mask)
        out = self.net.decoder(input_ids=tokens.reshape(n * k, s).to(self.mg.device), **kwargs)
        state.cache = out.cache if hasattr(out, "cache") else out.past_key_values
        state.steps += s
        return out.logits[:, -1].float().view(n, k, -1)  # [N, K, V]
