"""The audiocraft backend: Meta's reference network (audiocraft 1.3.0) under our generator.

``MusicGenerator(model, backend="audiocraft")`` runs the loaded model's weights through
audiocraft's own modules, built by audiocraft's own loaders from a converted checkpoint, and
drives them with our loop (delay pattern, CFG, sampling, long form, streaming: generator.py)::

    __init__       convert.to_audiocraft(model) -> state_dict.bin, compression_state_dict.bin, t5/
                   audiocraft.models.loaders.load_lm_model          -> LMModel (T5Conditioner,
                                                                       StreamingTransformer)
                   loaders.load_compression_model + get_wrapped_... -> EncodecModel (stereo: its
                                                                       interleaved wrapper)
    encode_text    LMModel.condition_provider: T5Conditioner.tokenize + forward
                   (None rows: audiocraft's null condition, "" with a zero mask)
    start          LMModel.streaming()        audiocraft's KV cache lives in its modules
    step           LMModel(columns, [], condition_tensors)[:, :, -1]    [N, K, V]
    release        leave the streaming context
    encode_audio   EncodecModel.encode -> codes [B, K, S]
    decode_audio   EncodecModel.decode -> [B, C, T]

Follows ``audiocraft/models/lm.py`` (``LMModel.forward``, ``generate``: the streaming loop
this replaces with ours), ``audiocraft/modules/conditioners.py`` and
``audiocraft/models/loaders.py``. Install audiocraft with ``musicgen-edu install-audiocraft``
(audiocraft_install.py); musicgen_edu never needs it otherwise.

**The model's own T5.** audiocraft's ``T5Conditioner`` loads its encoder by a hub name from
its own list (``MODELS``) with ``T5Tokenizer``. The converted folder holds the loaded model's T5
(``t5/``); :func:`local_t5` registers that folder's path as a name audiocraft accepts and reads
its tokenizer with ``AutoTokenizer`` (the debug models' is a byte tokenizer), during the load
only: the backend runs exactly the weights the other backends run, with no second download.

**One generation at a time.** audiocraft keeps its KV cache in the modules (``streaming()``),
not in a state object, so ``start`` takes a lock that ``release`` gives back: a second thread's
generation waits for the first. Melody models need audiocraft's chroma conditioner, whose
source separation downloads demucs weights: not offline, refused here with a clear error.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, ModelLoadError
from .contract import Backend, Conditioning

__all__ = ["AudiocraftBackend", "local_t5"]


@contextlib.contextmanager
def local_t5(folder: str | Path, dim: int) -> Iterator[str]:
    """Let audiocraft's ``T5Conditioner`` load the T5 in ``folder`` (a transformers folder, its
    tokenizer by ``AutoTokenizer``) under the folder's absolute path as its name; yields that
    name and undoes the registration on exit."""
    from audiocraft.modules import conditioners
    from transformers import AutoTokenizer

    name, cls = str(Path(folder).resolve()), conditioners.T5Conditioner
    saved = cls.MODELS, cls.MODELS_DIMS, conditioners.T5Tokenizer
    cls.MODELS, cls.MODELS_DIMS = [*cls.MODELS, name], {**cls.MODELS_DIMS, name: dim}
    conditioners.T5Tokenizer = AutoTokenizer
    try:
        yield name
    finally:
        cls.MODELS, cls.MODELS_DIMS, conditioners.T5Tokenizer = saved


@dataclass
class StreamState:
    """One generation's conditioning and the streaming context it entered."""

    cond: Conditioning
    context: contextlib.AbstractContextManager
    steps: int = 0


class AudiocraftBackend(Backend):
    """Runs a :class:`~musicgen_edu.models.MusicGenModel` with audiocraft's modules."""

    name = path = "audiocraft"

    def __init__(self, model):
        try:
            from audiocraft.models import builders, loaders
        except ImportError as exc:
            raise ConfigError("backend='audiocraft' needs audiocraft: run `musicgen-edu "
                              "install-audiocraft` (installs it beside your torch, never "
                              f"replacing it). ({exc})") from None
        from ..convert import T5_DIR, to_audiocraft

        if model.is_melody:
            raise ConfigError("backend='audiocraft' runs text-conditioned models; audiocraft's "
                              "melody conditioner downloads demucs weights, so melody models "
                              "use backend='native' or 'transformers'.")
        self.mg = model
        self.lock = threading.Lock()
        with tempfile.TemporaryDirectory(prefix="musicgen-audiocraft-") as folder:
            t5 = Path(folder) / T5_DIR       # this model's own T5, never a second download
            try:
                with local_t5(t5, model.model.config.text_encoder.d_model) as t5_name:
                    to_audiocraft(model, folder, t5_name=t5_name)
                    self.lm = loaders.load_lm_model(folder, device=str(model.device))
                codec = loaders.load_compression_model(folder, device=str(model.device))
            except Exception as exc:     # audiocraft's own message, with where it came from
                raise ModelLoadError(f"audiocraft could not build the converted model: "
                                     f"{type(exc).__name__}: {exc}") from exc
        self.codec = builders.get_wrapped_compression_model(codec, self.lm.cfg)
        self.lm.eval()
        self.codec.eval()

    # --- conditioning -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str | None], chroma: torch.Tensor | None = None,
                    melody_mask: list[bool] | None = None) -> Conditioning:
        """audiocraft's T5 conditioner on N prompts; ``None`` rows: its null condition."""
        from audiocraft.modules.conditioners import ConditioningAttributes

        provider = self.lm.condition_provider
        attributes = [ConditioningAttributes(text={"description": t}) for t in texts]
        states, mask = provider(provider.tokenize(attributes))["description"]
        return Conditioning(states=states, mask=mask)            # [N, L, D], [N, L]

    # --- decoding -----------------------------------------------------------------------------
    def start(self, cond: Conditioning, max_len: int | None = None) -> StreamState:
        """Enter audiocraft's streaming mode (its KV cache, in its modules) for this generation."""
        self.lock.acquire()
        context = self.lm.streaming()
        context.__enter__()
        return StreamState(cond, context)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Columns ``[N, K, s]`` through ``LMModel.forward`` (streaming: the cache grows by
        ``s``); the last position's logits ``[N, K, V]``."""
        condition = {"description": (state.cond.states, state.cond.mask)}
        logits = self.lm(tokens.to(self.mg.device), [], condition_tensors=condition)
        state.steps += tokens.shape[-1]
        return logits[:, :, -1].float()                                # [N, K, V]

    def release(self, state: StreamState) -> None:
        state.context.__exit__(None, None, None)
        self.lock.release()

    # --- audio <-> tokens ---------------------------------------------------------------------
    @torch.no_grad()
    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, K, S]`` with audiocraft's EnCodec (stereo: interleaved)."""
        wav = wav.to(self.mg.device, torch.float32)
        if self.mg.audio_channels == 1:
            wav = wav.mean(dim=1, keepdim=True)
        elif wav.shape[1] == 1:
            wav = wav.repeat(1, 2, 1)
        codes, _ = self.codec.encode(wav)
        return codes

    @torch.no_grad()
    def decode_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(tokens.to(self.mg.device), None).float()   # [B, C, T]
