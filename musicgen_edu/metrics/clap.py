"""CLAP text-audio agreement: does the clip sound like its prompt?

CLAP (Elizalde et al. 2023; LAION's "Large-scale Contrastive Language-Audio Pretraining",
Wu et al. 2023) embeds a text and a clip into one space, trained so that matching pairs point
the same way. The **CLAP score** of a (text, clip) pair is the cosine similarity of the two
embeddings, as in audiocraft ``metrics/clap_consistency.py`` and the MusicGen paper's
"CLAP score": higher = the clip matches the text better. Models come from transformers
(``ClapModel``, ``ClapProcessor``, ``ClapFeatureExtractor``)::

    text  --tokenizer--> ids --text model + projection--> [P], L2-normalised
    audio --mono, resample to 48 kHz, 10 s chunks--> log-mel [1, 1001, 64]
          --HTS-AT audio model + projection--> [P] per chunk, averaged, L2-normalised
    score = <text embedding, audio embedding>      in [-1, 1]

Two models:

* ``load_clap("laion/clap-htsat-unfused")``: the real checkpoint (network once, then cached);
  scores mean something, but compare them only within one CLAP model;
* ``load_clap("random")``: a tiny CLAP with the same architecture and random weights (seeded),
  with transformers' ``ClapFeatureExtractor`` (needs no files) and ``ByT5Tokenizer`` (bytes,
  needs no files, vocab 384 = the tiny text model's vocabulary) instead of CLAP's RoBERTa
  tokenizer, whose vocabulary files would need a download. Everything runs offline and
  deterministically, so code and shapes can be tested, but **the numbers are meaningless**:
  results carry ``meaningful=False`` and a warning.

Clips longer than the model's 10 s window are split into equal chunks of at most 10 s and
their embeddings averaged (deterministic, unlike the feature extractor's random crop).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ModelLoadError
from .descriptors import as_clips

__all__ = ["Clap", "load_clap", "clap_embeddings", "clap_text_embeddings", "clap_score",
           "prompt_adherence_table", "DEFAULT_CLAP", "CLAP_SAMPLE_RATE", "RANDOM_CLAP_WARNING"]

DEFAULT_CLAP = "laion/clap-htsat-unfused"
CLAP_SAMPLE_RATE = 48000  # Hz the CLAP feature extractor expects
RANDOM_CLAP_WARNING = (
    "CLAP model 'random' has random weights: its embeddings and scores are MEANINGLESS numbers, "
    "fine for testing code offline and nothing else. For real scores use "
    f"load_clap('{DEFAULT_CLAP}') (needs network once).")


@dataclass
class Clap:
    """A loaded CLAP model with its feature extractor and tokenizer."""

    name: str                       # "random", a hub id or a local folder
    model: torch.nn.Module          # transformers ClapModel, eval mode
    feature_extractor: object       # ClapFeatureExtractor (48 kHz log-mel)
    tokenizer: object               # RobertaTokenizer (real) or ByT5Tokenizer (random)
    device: torch.device
    meaningful: bool                # False for random weights: scores mean nothing
    load_seconds: float = 0.0

    @property
    def warning(self) -> str:
        """Empty for a real model; the 'meaningless numbers' warning for random weights."""
        return "" if self.meaningful else RANDOM_CLAP_WARNING

    @property
    def embedding_dim(self) -> int:  # P, the shared text/audio space
        return int(self.model.config.projection_dim)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"Clap({self.name!r}, {params:.1f}M params, P={self.embedding_dim}, "
                f"device={self.device}, meaningful={self.meaningful})")


# ------------------------------------------------------------------ loading

def build_random_clap(seed: int = 0):
    """A tiny CLAP (random, seeded weights), its feature extractor and a file-free tokenizer."""
    from transformers import ByT5Tokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

    text = dict(vocab_size=384, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=130,  # 129 bytes at most
                pad_token_id=0, bos_token_id=None, eos_token_id=1)  # = ByT5's pad and eos ids
    audio = dict(spec_size=256, num_mel_bins=64, window_size=8,      # the extractor's mel shape
                 patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
                 hidden_size=32)                                     # = 16 * 2 ** (stages - 1)
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=32)
    with torch.random.fork_rng(devices=[]):                          # the user's RNG is untouched
        torch.manual_seed(seed)
        model = ClapModel(config)
    extractor = ClapFeatureExtractor(  # laion/clap-htsat-unfused's preprocessing settings
        feature_size=64, sampling_rate=CLAP_SAMPLE_RATE, hop_length=480, max_length_s=10,
        fft_window_size=1024, frequency_min=50, frequency_max=14000, truncation="rand_trunc",
        padding="repeatpad")
    return model, extractor, ByT5Tokenizer()


def _load_pretrained_clap(name: str, cache_dir: str | None):
    from transformers import ClapModel, ClapProcessor

    from ..models import hub_reachable

    try:  # a cached or local copy loads without any network
        processor = ClapProcessor.from_pretrained(name, cache_dir=cache_dir, local_files_only=True)
        model = ClapModel.from_pretrained(name, cache_dir=cache_dir, local_files_only=True)
    except (OSError, ValueError):
        if Path(name).expanduser().is_dir():
            raise ModelLoadError(f"{name!r} is a folder but holds no CLAP model; save one with "
                                 "model.save_pretrained and processor.save_pretrained.") from None
        if not hub_reachable():
            raise ModelLoadError(
                f"Cannot load CLAP {name!r}: it is not in the cache "
                f"({cache_dir or 'the default Hugging Face cache'}) and the model hub cannot be "
                "reached from this machine. It needs network access once (e.g. on Colab). To "
                "test code offline use load_clap('random') (meaningless numbers).") from None
        try:
            processor = ClapProcessor.from_pretrained(name, cache_dir=cache_dir)
            model = ClapModel.from_pretrained(name, cache_dir=cache_dir)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"Cannot load CLAP {name!r} from the hub: {err}. Check the name "
                                 f"(e.g. {DEFAULT_CLAP!r}) or use 'random'.") from None
    return model, processor.feature_extractor, processor.tokenizer


_LOADED: dict[tuple[str, str, int], Clap] = {}


def load_clap(name: str = DEFAULT_CLAP, device: str | torch.device = "auto",
              cache_dir: str | None = None, seed: int = 0) -> Clap:
    """Load a CLAP model, or reuse the one already loaded with the same name and device.

    Args:
        name: ``"laion/clap-htsat-unfused"`` (default; any CLAP hub id or a local folder) or
            ``"random"`` (offline, random weights: meaningless numbers).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (see ``resolve_device``).
        cache_dir: hub cache; default ``$MUSICGEN_CACHE_DIR`` or Hugging Face's.
        seed: weights of the ``"random"`` model (same seed, same weights).

    Raises:
        ModelLoadError: no cached copy and no network (in seconds, not after retries), or a
            broken folder or hub id.
    """
    from ..models import resolve_device

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"CLAP name must be a non-empty string, got {name!r}; try 'random' "
                          f"offline or {DEFAULT_CLAP!r}.")
    dev = resolve_device(device)
    key = (name, str(dev), seed if name == "random" else 0)
    if key in _LOADED:
        return _LOADED[key]
    start = time.perf_counter()
    if name == "random":
        model, extractor, tokenizer = build_random_clap(seed)
    else:
        cache_dir = cache_dir or os.environ.get("MUSICGEN_CACHE_DIR") or None
        model, extractor, tokenizer = _load_pretrained_clap(name, cache_dir)
    clap = Clap(name=name, model=model.eval().to(dev), feature_extractor=extractor,
                tokenizer=tokenizer, device=dev, meaningful=name != "random",
                load_seconds=time.perf_counter() - start)
    _LOADED[key] = clap
    return clap


def _as_clap(clap) -> Clap:
    if clap is None:
        return load_clap()
    if isinstance(clap, str):
        return load_clap(clap)
    if isinstance(clap, Clap):
        return clap
    raise ConfigError(f"expected a Clap from load_clap(...) or a CLAP name, got "
                      f"{type(clap).__name__}.")


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output (pooler_output = the projection); 4.x a tensor."""
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(emb.float(), dim=-1)


# ------------------------------------------------------------------ embeddings

@torch.no_grad()
def clap_embeddings(wavs, sample_rate: int | None = None, clap: Clap | str | None = None,
                    batch_size: int = 8) -> np.ndarray:
    """CLAP audio embeddings ``[N, P]`` (L2-normalised), one per clip.

    Args:
        wavs: a ``Generation``, ``[B, C, T]``, ``[C, T]``, ``[T]`` or a list of clips.
        sample_rate: Hz (leave out for a Generation); audio is resampled to 48 kHz.
        clap: a :class:`Clap`, a name for :func:`load_clap`, or ``None`` for the default.
        batch_size: 10 s chunks per forward pass.
    """
    from ..audio import resample

    clap = _as_clap(clap)
    clips, sample_rate, _ = as_clips(wavs, sample_rate)
    fe = clap.feature_extractor
    chunks, owner = [], []                                     # 10 s pieces and their clip
    for i, clip in enumerate(clips):
        mono = resample(clip.mean(axis=0), sample_rate, CLAP_SAMPLE_RATE)  # [T48]
        pieces = np.array_split(mono, math.ceil(mono.shape[-1] / fe.nb_max_samples))
        chunks += pieces
        owner += [i] * len(pieces)
    truncation = "fusion" if clap.model.config.audio_config.enable_fusion else "rand_trunc"
    embs = []
    for start in range(0, len(chunks), batch_size):
        feats = fe(chunks[start:start + batch_size], sampling_rate=CLAP_SAMPLE_RATE,
                   truncation=truncation, padding="repeatpad", return_tensors="pt")
        is_longer = torch.zeros_like(feats["is_longer"])      # no chunk is over 10 s
        out = clap.model.get_audio_features(
            input_features=feats["input_features"].to(clap.device, torch.float32),
            is_longer=is_longer.to(clap.device))
        embs.append(_pooled(out).cpu())                        # [n, P]
    embs = torch.cat(embs)
    owner = torch.tensor(owner)
    per_clip = torch.stack([embs[owner == i].mean(0) for i in range(len(clips))])  # [N, P]
    return torch.nn.functional.normalize(per_clip, dim=-1).numpy()


@torch.no_grad()
def clap_text_embeddings(texts: str | Sequence[str], clap: Clap | str | None = None) -> np.ndarray:
    """CLAP text embeddings ``[M, P]`` (L2-normalised), one per text."""
    clap = _as_clap(clap)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ConfigError(f"texts must be non-empty strings, got {texts!r}.")
    cfg = clap.model.config.text_config
    max_length = min(512, cfg.max_position_embeddings - cfg.pad_token_id - 1)  # position ids fit
    ids = clap.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                         return_tensors="pt")
    out = clap.model.get_text_features(input_ids=ids["input_ids"].to(clap.device),
                                       attention_mask=ids["attention_mask"].to(clap.device))
    return _pooled(out).cpu().numpy()


# ------------------------------------------------------------------ scores and tables

def _label(df, clap: Clap):
    df.attrs.update(meaningful=clap.meaningful, warning=clap.warning, clap_model=clap.name)
    if not clap.meaningful:
        import warnings

        warnings.warn(RANDOM_CLAP_WARNING, UserWarning, stacklevel=3)
    return df


def clap_score(texts: str | Sequence[str], wavs, sample_rate: int | None = None,
               model: Clap | str | None = None):
    """CLAP score (cosine similarity) of each clip with its text.

    Args:
        texts: one text for every clip, or one text per clip (clip ``i`` with text ``i``).
        wavs: a ``Generation``, ``[B, C, T]`` or a list of clips.
        sample_rate: Hz (leave out for a Generation).
        model: a :class:`Clap`, a name, or ``None`` for ``laion/clap-htsat-unfused``.

    Returns:
        DataFrame with columns ``text, score, meaningful`` indexed by ``clip``;
            ``df.attrs`` holds ``meaningful``, ``warning`` and ``clap_model``. With the random
            model a ``UserWarning`` is also emitted: the numbers mean nothing.
    """
    import pandas as pd  # lazy

    clap = _as_clap(model)
    audio = clap_embeddings(wavs, sample_rate, clap)                  # [N, P]
    texts = [texts] * len(audio) if isinstance(texts, str) else list(texts)
    if len(texts) != len(audio):
        raise ConfigError(f"got {len(texts)} texts for {len(audio)} clips; pass one text, or "
                          "one per clip.")
    text = clap_text_embeddings(texts, clap)                          # [N, P]
    scores = (audio * text).sum(axis=1)                               # cosine per pair
    df = pd.DataFrame(dict(text=texts, score=scores.astype(float),
                           meaningful=clap.meaningful)).rename_axis("clip")
    return _label(df, clap)


def prompt_adherence_table(generations, prompts: Sequence[str] | None = None,
                           clap: Clap | str | None = None):
    """CLAP score of every clip against every prompt: does a clip match *its own* prompt best?

    Args:
        generations: a ``Generation`` or a list of them (e.g. one per prompt, several seeds).
        prompts: the texts to score against; default: the prompts the clips were made from.
        clap: a :class:`Clap`, a name, or ``None`` for ``laion/clap-htsat-unfused``.

    Returns:
        Long DataFrame, one row per (clip, prompt): ``clip, generated_from, seed, prompt,
            score, own_prompt`` (``own_prompt``: the clip was generated from this prompt). Pivot it
            with ``df.pivot_table(index="generated_from", columns="prompt", values="score")``.
    """
    import pandas as pd  # lazy

    clap = _as_clap(clap)
    gens = [generations] if hasattr(generations, "wav") else list(generations)
    if not gens or not all(hasattr(g, "wav") and hasattr(g, "prompts") for g in gens):
        raise ConfigError("generations must be a Generation or a list of Generations.")
    audio = np.concatenate([clap_embeddings(g, None, clap) for g in gens])   # [N, P]
    made_from = [p for g in gens for p in g.prompts]
    seeds = [s for g in gens for s in g.seeds]
    prompts = list(dict.fromkeys(p for p in made_from if p)) if prompts is None else list(prompts)
    text = clap_text_embeddings(prompts, clap)                                # [M, P]
    scores = audio @ text.T                                                   # [N, M] cosines
    rows = [dict(clip=i, generated_from=made_from[i], seed=seeds[i], prompt=p,
                 score=float(scores[i, j]), own_prompt=p == made_from[i])
            for i in range(len(audio)) for j, p in enumerate(prompts)]
    return _label(pd.DataFrame(rows), clap)
