"""The backend contract: everything the generator asks of a backend, declared in one place.

``generator.py`` owns the decoding loop (delay pattern, CFG, sampling, long form, streaming);
a backend only runs the network. Per decoder window the generator calls, in this order
(N rows: ``2B`` with classifier-free guidance, else ``B``):

    cond   = backend.encode_text(texts, chroma, melody_mask)    Conditioning, N rows
    state  = backend.start(cond, max_len)                       empty KV cache (+ text keys/values)
    loop:    logits = backend.step(columns [N, K, s], state)    [N, K, V]   then sampling.py draws
        or   tokens = backend.step_draw(columns, state, sampling, ...)  [B, K]  (fuses_draw)
    backend.release(state)                                      buffers may go back to a pool

and outside the loop ``encode_audio`` (a continuation's prompt ``[B, C, T]`` -> ``[B, K, S]``)
and ``decode_audio`` (``[B, K, S]`` -> ``[B, C, T]``). :class:`Backend` states this as a
``typing.Protocol`` (PEP 544): required methods, and optional capabilities as attributes whose
defaults describe a backend that has none of them. The two backends subclass it and so inherit
those defaults (``transformers.TransformersBackend``, the reference, and
``native_backend.NativeBackend``, also behind ``"native-int8"``); any other object that has every
member is a backend too (``isinstance(obj, Backend)``), which is how ``get_backend`` accepts
one. Callers read the attributes; they never ask whether a backend has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..models import MusicGenModel
from ..sampling import Sampling

__all__ = ["Backend", "Conditioning"]


@dataclass
class Conditioning:
    """What the decoder is conditioned on, for N rows (N = 2B with CFG): ``encode_text``'s
    result, passed to ``start``."""

    states: torch.Tensor            # [N, L, D] projected, padding zeroed
    mask: torch.Tensor | None       # [N, L] 1 = attend (None for melody prefixes)
    prefix: bool = False            # True: prepended to the decoder input (melody models)

    def __len__(self) -> int:
        return self.states.shape[0]


@runtime_checkable
class Backend(Protocol):
    """What a backend is and does. Shapes: N rows (``2B`` with CFG), K codebooks, s columns
    fed at once, V vocabulary, ``[B, C, T]`` waveforms, ``[B, K, S]`` tokens.

    The state a backend returns from :meth:`start` is its own (a KV cache and whatever it
    needs); the generator only hands it back to :meth:`step`, :meth:`step_draw` and
    :meth:`release`.
    """

    # --- what it is ----------------------------------------------------------------------
    name: str                       # registry name: "transformers", "native", "native-int8"
    mg: MusicGenModel               # the loaded model whose weights it runs
    path: str                       # the path its steps take: Generation.timings["decoder"]

    # --- optional capabilities: the defaults are those of a backend without them -----------
    decoder: nn.Module | None = None   # its own decoder module; None: transformers' modules
    replays: int = 0                # steps run as a CUDA-graph replay, over all generations
    capture_s: float = 0.0          # seconds spent capturing CUDA graphs, over all generations

    @property
    def fuses_draw(self) -> bool:
        """``step_draw`` runs the draw inside the step (one launch); read-only, default no."""
        return False

    # --- conditioning --------------------------------------------------------------------
    def encode_text(self, texts: list[str | None], chroma: torch.Tensor | None = None,
                    melody_mask: list[bool] | None = None) -> Conditioning:
        """Encode N prompts (``None`` rows: the null condition) into a :class:`Conditioning`.

        Args:
            texts: N prompts, conditional rows first, then the CFG rows.
            chroma: melody models only, ``[N, frames, 12]`` chroma features.
            melody_mask: melody models only, one bool per row; False rows use no melody.
        """
        ...

    # --- decoding ------------------------------------------------------------------------
    def start(self, cond: Conditioning, max_len: int | None = None) -> object:
        """A fresh decoder state (an empty KV cache) for ``len(cond)`` rows; ``max_len``
        decoder positions will be used (a static cache is allocated for that many)."""
        ...

    def step(self, tokens: torch.Tensor, state) -> torch.Tensor:
        """Feed delayed-grid columns ``[N, K, s]`` (a prefill when ``s > 1``, then one column
        per call); return the last position's logits ``[N, K, V]`` in float32."""
        ...

    def step_draw(self, tokens: torch.Tensor, state, sampling: Sampling, seeds: torch.Tensor,
                  step: int) -> torch.Tensor:
        """:meth:`step`, then ``sampling.draw``: columns ``[N, K, s]`` -> tokens ``[B, K]``.

        ``sampling`` is fixed for a generation (a capturable one: counter sampler or greedy);
        ``seeds`` ``[B]`` and ``step`` drive the counter sampler. This default runs the two one
        after the other; a backend with ``fuses_draw`` runs them as one captured step, with the
        same result.
        """
        return sampling.draw(self.step(tokens, state), seeds=seeds, step=step)

    def release(self, state) -> None:
        """The generation is done with ``state``: a backend that pools buffers takes them
        back (default: nothing to do)."""

    # --- audio <-> tokens ----------------------------------------------------------------
    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """EnCodec-encode waveforms ``[B, C, T]`` at the model's rate into tokens ``[B, K, S]``."""
        ...

    def decode_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        """EnCodec-decode tokens ``[B, K, S]`` into float32 waveforms ``[B, C, T]``."""
        ...
