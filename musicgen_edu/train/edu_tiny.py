"""edu-tiny: a whole MusicGen built and trained by this library, then shipped (issue #30).

Four stages: the first in codec.py and codec_loop.py, the other three functions here
(``scripts/train_codec.py`` and ``scripts/train_edu_tiny.py`` run them in order)::

    1. codec   codec.py + codec_loop.py train a 16 kHz EnCodec with 4 codebooks of 256 on
               synth.py's clips (scripts/train_codec.py); its best checkpoint is the start here
    2. build   build_edu_tiny(codec): transformers' MusicgenForConditionalGeneration with
               - audio_encoder: the trained codec (codec.export_encodec)
               - text_encoder:  a small T5 with random weights, frozen (MusicGen freezes its
                                T5 too) and the file-free byte tokenizer (ByT5Tokenizer):
                                the decoder's cross-attention learns to read its states
               - decoder:       MusicGen's decoder, 4 layers at width 256, random weights
    3. tokens  synth_token_dataset(model, n, seconds): synth clips -> codec tokens [N, K, S]
               with their captions, a TokenDataset for train.Trainer (which trains the
               decoder and enc_to_dec_proj with caption dropout, as for fine-tuning)
    4. ship    ship_model(model, folder): float16 safetensors + configs (<= 20 MB), which
               ``load_model("edu-tiny")`` reads from the package (models.SHIPPED_MODELS)

The architecture is MusicGen's (Copet et al. 2023, "Simple and Controllable Music
Generation"), at the scale of transformers' ``tests/models/musicgen`` configs; nothing here is
a new network, only smaller settings of the published ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models import MusicGenModel, special_id_past_vocab
from .codec import Codec
from .data import TokenDataset
from .synth import clip_seed, render, synth_specs

__all__ = ["EduTinyConfig", "build_edu_tiny", "synth_token_dataset", "ship_model",
           "MAX_SHIPPED_BYTES"]

MAX_SHIPPED_BYTES = 20 * 1024 * 1024          # the budget for weights in the package


@dataclass(frozen=True)
class EduTinyConfig:
    """The sizes of edu-tiny's text encoder and decoder (the codec's are in CodecConfig)."""

    text_width: int = 128        # T5 d_model
    text_layers: int = 2         # T5 encoder blocks
    text_heads: int = 4          # T5 attention heads (d_kv = width / heads)
    text_ffn: int = 256          # T5 feed-forward width
    width: int = 256             # decoder hidden size
    layers: int = 4              # decoder blocks
    heads: int = 4               # decoder attention heads
    ffn: int = 1024              # decoder feed-forward width
    max_frames: int = 1500       # decoder positions: 30 s at 50 frames/s
    seed: int = 0                # the random weights of T5 and the decoder


def build_edu_tiny(codec: Codec, config: EduTinyConfig = EduTinyConfig(),
                   name: str = "edu-tiny") -> MusicGenModel:
    """A MusicGen whose audio encoder is ``codec`` (trained) and whose T5 and decoder are new.

    Returns a float32 CPU :class:`MusicGenModel` (``source="edu-tiny"``) that the generator,
    every backend and ``train.Trainer`` take like any loaded checkpoint.
    """
    from transformers import (
        ByT5Tokenizer,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    from .codec import export_encodec

    encodec = export_encodec(codec)
    size = codec.config.codebook_size               # the special (BOS/pad) id is one past it
    text = T5Config(vocab_size=384, d_model=config.text_width, d_ff=config.text_ffn,
                    d_kv=config.text_width // config.text_heads, num_layers=config.text_layers,
                    num_heads=config.text_heads)
    decoder = MusicgenDecoderConfig(
        vocab_size=size, num_codebooks=codec.config.codebooks, hidden_size=config.width,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, ffn_dim=config.ffn,
        max_position_embeddings=config.max_frames, pad_token_id=size, bos_token_id=size,
        audio_channels=1)
    with special_id_past_vocab():                   # pad id = vocab size: MusicGen's layout
        mg_config = MusicgenConfig(text_encoder=text.to_dict(),
                                   audio_encoder=encodec.config.to_dict(),
                                   decoder=decoder.to_dict())
    with torch.random.fork_rng(devices=[]):         # seeded without touching the caller's RNG
        torch.manual_seed(config.seed)
        net = MusicgenForConditionalGeneration(mg_config)
    net.audio_encoder.load_state_dict(encodec.state_dict())
    net.generation_config.decoder_start_token_id = size
    net.generation_config.pad_token_id = size
    net.eval()
    return MusicGenModel(name=name, model=net, tokenizer=ByT5Tokenizer(),
                         device=torch.device("cpu"), dtype=torch.float32, source="edu-tiny")


@torch.no_grad()
def synth_token_dataset(model: MusicGenModel, n: int, seconds: float = 5.0, seed: int = 0,
                        batch: int = 16) -> TokenDataset:
    """``n`` synth clips of ``seconds`` (synth.synth_clips, ``seed``) encoded by ``model``'s
    codec: ``dataset[i]`` is ``(tokens [K, S], caption)``, S = ceil(samples / hop). The clips
    are rendered a batch at a time: only their tokens are kept (int16, 4 x 50 per second)."""
    if not 1 <= n <= 100_000:
        raise ConfigError(f"n={n} clips; allowed: 1 to 100000.")
    specs = synth_specs(n, seed)
    codec: Any = model.model.audio_encoder
    windows, captions = [], []
    for i in range(0, n, batch):
        part = specs[i: i + batch]
        wav = torch.from_numpy(np.stack([render(s, seconds, model.sample_rate,
                                                seed=clip_seed(seed, i + j))
                                         for j, s in enumerate(part)]))[:, None]  # [b, 1, T]
        codes = codec.encode(wav.to(model.device, torch.float32)).audio_codes  # [1, b, K, S]
        windows += list(codes[0].cpu().to(torch.int16))
        captions += [s.caption() for s in part]
    return TokenDataset(windows, captions, [f"synth:{seed}:{i}" for i in range(n)])


def ship_model(model: MusicGenModel, folder: str | Path, info: dict | None = None) -> int:
    """Save ``model`` as it ships: float16 weights (safetensors), its configs, the tokenizer,
    and ``info`` (training config, evaluation) as ``edu_tiny.json``, written whole beside
    ``folder`` and then swapped in. Returns the bytes written; above
    :data:`MAX_SHIPPED_BYTES` it raises ConfigError and leaves ``folder`` as it was."""
    import copy
    import os
    import shutil

    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)          # written whole beside it, then swapped in
    tmp.mkdir(parents=True)
    net: Any = copy.deepcopy(model.model).to(torch.float16)
    net.save_pretrained(str(tmp))
    tokenizer: Any = model.tokenizer
    tokenizer.save_pretrained(str(tmp))
    (tmp / "edu_tiny.json").write_text(json.dumps(info or {}, indent=2, default=_plain),
                                       encoding="utf-8")
    total = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    if total > MAX_SHIPPED_BYTES:
        shutil.rmtree(tmp)
        raise ConfigError(f"the shipped model is {total / 2**20:.1f} MiB; allowed: at most "
                          f"{MAX_SHIPPED_BYTES / 2**20:.0f} MiB. Use smaller EduTinyConfig sizes; "
                          f"'{folder}' was not changed.")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return total


def _plain(value):
    """JSON for dataclasses and numpy scalars in ``info``."""
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
