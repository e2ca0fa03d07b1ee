"""Model registry and ``load_model``: hub checkpoints, local folders and offline models.

A loaded model is a :class:`MusicGenModel`: the transformers module (the reference backend),
its tokenizer and the facts the generator needs (sample rate, frame rate, codebooks, channels).
Five sources, one result type, so every model goes through the same generation code:

* hub names (``facebook/musicgen-small`` ...) via ``from_pretrained`` (needs network once;
  cached in ``cache_dir`` or ``$MUSICGEN_CACHE_DIR``);
* a local folder saved with ``save_pretrained``;
* ``debug``, ``debug-stereo``, ``debug-melody``: tiny real MusicGen networks built from configs
  (T5 text encoder, 32 kHz EnCodec with 4 codebooks, 2-layer decoder) with random weights seeded
  deterministically, and a byte-level tokenizer that needs no files. They make noise-like
  music, but through exactly the code path of the real checkpoints (audiocraft's
  ``get_pretrained('debug')`` plays the same role in its tests);
* ``random-small``, ``random-medium``, ``random-large``: the published architectures (t5-base,
  EnCodec 32 kHz, the MusicGen decoders) with random weights, to profile and benchmark at the
  real models' speed without downloading anything;
* ``edu-tiny``: a whole MusicGen (16 kHz codec, 4-layer decoder) trained by this library on
  synthetic music and shipped inside the package (``weights/edu-tiny``, float16, < 20 MB): it
  plays the tempo and register a caption asks for (``train/edu_tiny.py``, docs/edu_tiny.md).
  It is ``DEFAULT_MODEL``: what ``load_model()``, the generator, the studio, the CLI and the
  service use when no model is named.

Follows transformers ``models/musicgen/modeling_musicgen.py`` and the MusicGen model cards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError, ModelLoadError

__all__ = ["MusicGenModel", "as_model", "load_model", "list_models", "resolve_device",
           "resolve_dtype", "clear_model_cache", "build_offline_model", "hub_reachable",
           "HUB_MODELS", "DEBUG_MODELS", "RANDOM_MODELS", "SHIPPED_MODELS", "shipped_model_info",
           "DEFAULT_MODEL"]

# name -> (audio_channels, melody?, parameters in millions) from the MusicGen model cards
HUB_MODELS: dict[str, tuple[int, bool, int]] = {
    "facebook/musicgen-small": (1, False, 300),
    "facebook/musicgen-medium": (1, False, 1500),
    "facebook/musicgen-large": (1, False, 3300),
    "facebook/musicgen-melody": (1, True, 1500),
    "facebook/musicgen-stereo-small": (2, False, 300),
    "facebook/musicgen-stereo-medium": (2, False, 1500),
    "facebook/musicgen-stereo-large": (2, False, 3300),
    "facebook/musicgen-stereo-melody": (2, True, 1500),
}
DEBUG_MODELS: dict[str, tuple[int, bool]] = {
    "debug": (1, False), "debug-stereo": (2, False), "debug-melody": (1, True)}
# The real decoders' sizes (hidden, layers, heads, ffn) with random weights: for profiling and
# benchmarks offline. They generate noise, at the real models' speed.
RANDOM_MODELS: dict[str, tuple[int, int, int, int]] = {
    "random-small": (1024, 24, 16, 4096), "random-medium": (1536, 48, 24, 6144),
    "random-large": (2048, 48, 32, 8192)}
# Models trained here and shipped in the package: name -> folder under musicgen_edu/
SHIPPED_MODELS: dict[str, str] = {"edu-tiny": "weights/edu-tiny"}
# What plays when nobody names a model (generator, CLI, studio, service, make demo): trained,
# offline, 16 kHz; "debug" (random weights, noise) stays for the fast tests.
DEFAULT_MODEL = "edu-tiny"


@dataclass
class MusicGenModel:
    """A loaded MusicGen model and what the generator needs to know about it."""

    name: str                       # registry name, hub id or local path
    model: torch.nn.Module          # MusicgenForConditionalGeneration or the Melody variant
    tokenizer: object               # text tokenizer (T5 for hub models, ByT5 for debug)
    device: torch.device            # where the weights live
    dtype: torch.dtype              # dtype of the text encoder and decoder (EnCodec stays fp32)
    is_melody: bool = False         # accepts a melody (chroma) condition
    max_duration: float = 30.0      # seconds one window of the decoder was trained on
    load_seconds: float = 0.0       # wall time the load took (0 when reused from the cache)
    source: str = "hub"             # "hub", "local", "debug", "random" or "edu-tiny"
    extra: dict = field(default_factory=dict)  # caches of what backends build per model

    @property
    def config(self):
        return self.model.config

    @property
    def sample_rate(self) -> int:   # Hz of the waveforms EnCodec reads and writes
        return int(self.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> int:    # token frames per second (50 for MusicGen)
        return int(self.config.audio_encoder.frame_rate)

    @property
    def num_codebooks(self) -> int:  # K rows of [B, K, S] (8 for stereo: L/R interleaved)
        return int(self.config.decoder.num_codebooks)

    @property
    def audio_channels(self) -> int:  # C of [B, C, T]
        return int(getattr(self.config.decoder, "audio_channels", 1))

    @property
    def special_token(self) -> int:  # BOS/pad id of the delay pattern (= codebook size)
        return int(self.config.decoder.pad_token_id)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __repr__(self) -> str:
        return (f"MusicGenModel({self.name!r}, {self.num_parameters() / 1e6:.1f}M params, "
                f"{self.sample_rate} Hz, {self.audio_channels} ch, K={self.num_codebooks}, "
                f"device={self.device}, dtype={self.dtype}, melody={self.is_melody})")


def as_model(model) -> MusicGenModel:
    """Accept a MusicGenModel or anything holding one as ``.model`` (a MusicGenerator).

    Raises:
        ConfigError: anything else, with what to pass instead.
    """
    if isinstance(model, MusicGenModel):
        return model
    if isinstance(getattr(model, "model", None), MusicGenModel):  # a MusicGenerator
        return model.model
    raise ConfigError(f"expected a model from mg.load_model(...) or a mg.MusicGenerator, got "
                      f"{type(model).__name__}; e.g. model = mg.load_model('debug').")


# --- device and dtype -----------------------------------------------------------------------

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda > mps > cpu; anything else is checked and returned."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device={device!r} is not a torch device; use 'auto', 'cpu', "
                          "'cuda', 'cuda:N' or 'mps'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here; use "
                          "device='auto' or 'cpu' (on Colab: Runtime > Change runtime type > GPU).")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} but MPS is not available; use 'auto' or 'cpu'.")
    return dev


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``"auto"``: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on mps/cpu.

    bf16 is preferred because MusicGen's T5 text encoder overflows in fp16.
    """
    device = device or torch.device("cpu")
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; use 'auto' or one of "
                          f"{sorted(set(_DTYPES))}.")
    return _DTYPES[dtype]


# --- offline models: tiny debug ones and the real architectures with random weights ---------

class _PastVocabFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "within the vocabulary" not in record.getMessage()


@contextlib.contextmanager
def special_id_past_vocab():
    """MusicGen's BOS/pad id is the codebook size, one past the vocabulary, by design; while
    its configs are built or loaded, transformers' warning about that id (and only that one)
    is dropped."""
    log, drop = logging.getLogger("transformers.configuration_utils"), _PastVocabFilter()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def _offline_configs(name: str):
    """T5, EnCodec and decoder configs of an offline model (see DEBUG_MODELS, RANDOM_MODELS)."""
    from transformers import EncodecConfig, T5Config

    if name in DEBUG_MODELS:
        channels = DEBUG_MODELS[name][0]
        text = T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
        codec = EncodecConfig(  # 32 kHz, hop 640 -> 50 frames/s, 4 codebooks of 2048 like MusicGen
            sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4],
            codebook_size=2048, num_filters=8, hidden_size=32, codebook_dim=32,
            num_residual_layers=1, target_bandwidths=[2.2], normalize=False,
            use_causal_conv=False, compress=2, num_lstm_layers=1)
        decoder = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                       initializer_factor=0.2)  # 10x transformers' default: prompts visibly matter
    else:  # the published configs: t5-base, facebook/encodec_32khz, the MusicGen decoder
        channels = 1
        dim, layers, heads, ffn = RANDOM_MODELS[name]
        text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                        num_heads=12)
        codec = EncodecConfig(
            sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4],
            codebook_size=2048, num_filters=64, hidden_size=128, codebook_dim=128,
            num_residual_layers=1, target_bandwidths=[2.2], normalize=False,
            use_causal_conv=False, compress=2, num_lstm_layers=2)
        decoder = dict(hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                       ffn_dim=ffn)
    decoder.update(vocab_size=2048, num_codebooks=4 * channels, max_position_embeddings=2048,
                   pad_token_id=2048, bos_token_id=2048, audio_channels=channels)
    return text, codec, decoder


def build_offline_model(name: str = "debug", seed: int = 0):
    """Build an offline model (and a byte tokenizer that needs no files); same seed -> same weights."""
    from transformers import (
        ByT5Tokenizer,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )

    melody = DEBUG_MODELS.get(name, (1, False))[1]
    text, codec, decoder = _offline_configs(name)
    with special_id_past_vocab():
        if melody:
            config = MusicgenMelodyConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(),
                                          decoder=MusicgenMelodyDecoderConfig(**decoder).to_dict())
            cls = MusicgenMelodyForConditionalGeneration
        else:
            config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(),
                                    decoder=MusicgenDecoderConfig(**decoder).to_dict())
            cls = MusicgenForConditionalGeneration
    fork = torch.random.fork_rng(devices=[])  # seed the weights without touching the user's RNG
    with fork:
        torch.manual_seed(seed)
        model = cls(config)
        _init_codebooks(model.audio_encoder)
    # transformers' own melody generate takes the decoder's start token (also its pad) from
    # here; transformers 5.0 does not fall back to bos_token_id for it: set it, to the same id
    model.generation_config.decoder_start_token_id = decoder["bos_token_id"]
    return model, ByT5Tokenizer()


@torch.no_grad()
def _init_codebooks(codec, latent_std: float = 256.0, seconds: float = 2.0) -> None:
    """Give a random EnCodec usable codebooks, as EnCodec's training does with k-means init.

    transformers starts codebooks at zero, so every frame would encode to token 0 and decode to
    the same sound. Here the encoder's output is scaled to ``latent_std`` (a random decoder
    barely reacts to small latents), then each residual codebook is filled with latent vectors
    of a few test signals (noise, a chirp, a gated tone), so encoding is informative (hundreds
    of distinct tokens) and different tokens decode to measurably different audio (an
    untrained decoder still makes every clip sound much alike: a debug model teaches the code
    path, not the music).
    """
    rate = codec.config.sampling_rate
    t = torch.arange(int(seconds * rate)) / rate
    signals = torch.stack([torch.randn(t.shape) * 0.3,
                           torch.sin(2 * torch.pi * 220 * t * (1 + t)),
                           torch.sign(torch.sin(2 * torch.pi * 3 * t)) * torch.sin(2 * torch.pi * 440 * t)])
    latents = codec.encoder(signals[:, None])                            # [3, D, S]
    last_conv = [m for m in codec.encoder.modules() if isinstance(m, torch.nn.Conv1d)][-1]
    for param in last_conv.parameters():  # weight-norm g and v, bias: output scales by the factor
        param.mul_(latent_std / latents.std())
    residual = codec.encoder(signals[:, None]).transpose(1, 2).flatten(0, 1)  # [frames, D]
    for layer in codec.quantizer.layers:                 # residual VQ: each layer codes what is left
        codebook = layer.codebook
        size = codebook.embed.shape[0]
        picks = torch.randint(0, residual.shape[0], (size,))
        jitter = 0.01 * residual.std() * torch.randn(size, residual.shape[1])
        codebook.embed.copy_(residual[picks] + jitter)
        codebook.embed_avg.copy_(codebook.embed)
        codebook.cluster_size.fill_(1.0)
        codebook.inited.fill_(True)
        residual = residual - codebook.embed[torch.cdist(residual, codebook.embed).argmin(-1)]


# --- hub and local checkpoints ---------------------------------------------------------------

def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers within ``timeout`` seconds (False under HF_HUB_OFFLINE=1).

    A fast network probe, so an offline user gets an answer in seconds, not after retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_pretrained(name: str, cache_dir: str | None, dtype: torch.dtype):
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    local = Path(name).expanduser().is_dir()
    kwargs = dict(cache_dir=cache_dir)
    try:  # a cached or local copy loads without any network
        config = AutoConfig.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        if local:
            raise ModelLoadError(f"{name!r} is a folder but holds no MusicGen config.json. Save "
                                 "one with model.save_pretrained(folder) first.") from None
        if not hub_reachable():
            raise ModelLoadError(
                f"Cannot load {name!r}: its weights are not in the cache "
                f"({cache_dir or 'the default Hugging Face cache'}) and the model hub cannot be "
                "reached from this machine. Loading a hub model needs network access once "
                "(e.g. on Colab), or pass a local folder saved with save_pretrained. To work "
                "offline, use the built-in tiny model: load_model('debug').") from None
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"Cannot load {name!r} from the hub: {err}. Check the name "
                                 f"(known: {', '.join(HUB_MODELS)}) or use 'debug'.") from None
    melody = config.model_type == "musicgen_melody"
    if config.model_type not in ("musicgen", "musicgen_melody"):
        raise ModelLoadError(f"{name!r} is a {config.model_type!r} model, not MusicGen.")
    cls = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    model = cls.from_pretrained(name, config=config, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    return model, tokenizer, melody, ("local" if local else "hub")


# --- the public entry point -----------------------------------------------------------------

_LOADED: dict[tuple[str, str, torch.dtype], MusicGenModel] = {}


def list_models() -> list[str]:
    """Names ``load_model`` knows: offline models first (shipped, debug, random), then hub
    checkpoints."""
    return [*SHIPPED_MODELS, *DEBUG_MODELS, *RANDOM_MODELS, *HUB_MODELS]


def shipped_model_dir(name: str) -> Path:
    """The package folder holding a shipped model's weights (see SHIPPED_MODELS)."""
    return Path(__file__).parent / SHIPPED_MODELS[name]


def shipped_model_info(name: str = "edu-tiny") -> dict:
    """How a shipped model was made and how it did: its ``edu_tiny.json`` (the codec's and the
    decoder's settings, the training run's, the codec's held-out scores and the grade table)."""
    import json

    if name not in SHIPPED_MODELS:
        raise ModelLoadError(f"{name!r} is not a shipped model; shipped: {list(SHIPPED_MODELS)}.")
    path = shipped_model_dir(name) / "edu_tiny.json"
    if not path.is_file():
        raise ModelLoadError(f"{name!r} has no weights in this install ('{path}' is missing).")
    return json.loads(path.read_text(encoding="utf-8"))


def clear_model_cache(name: str | None = None) -> None:
    """Forget models kept by ``load_model`` (frees their memory once you drop your references).

    Args:
        name: forget only this model (every device and dtype it was loaded with); None = all.
    """
    for key in [k for k in _LOADED if name is None or k[0] == name]:
        del _LOADED[key]


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "auto",
               dtype: str | torch.dtype = "auto", cache_dir: str | None = None,
               cache: bool = True) -> MusicGenModel:
    """Load a MusicGen model (default: ``DEFAULT_MODEL``, the shipped ``edu-tiny``), or reuse the
    one already loaded with the same name/device/dtype.

    Args:
        name: ``"debug"``, ``"debug-stereo"``, ``"debug-melody"``, ``"random-small"`` (real
            architecture, random weights; also medium/large), ``"edu-tiny"`` (trained here,
            shipped in the package), a hub id such as
            ``"facebook/musicgen-small"``, or a local folder saved with ``save_pretrained``.
        device: ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        dtype: ``"auto"`` (bf16/fp16 on GPU, fp32 otherwise), ``"float32"``, ``"float16"``,
            ``"bfloat16"``, or a ``torch.dtype``. EnCodec always runs in fp32.
        cache_dir: where hub weights are cached; default ``$MUSICGEN_CACHE_DIR`` or the
            Hugging Face default.
        cache: keep and reuse the model; ``False``: a private copy (``train.Trainer``).

    Raises:
        ModelLoadError: unknown name, no network for a hub model, or a broken folder.
        ConfigError: a device or dtype that this machine does not have.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model name must be a non-empty string, got {name!r}; try "
                          f"{DEFAULT_MODEL!r}.")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    key = (name, str(dev), torch_dtype)
    if cache and key in _LOADED:
        return _LOADED[key]
    cache_dir = cache_dir or os.environ.get("MUSICGEN_CACHE_DIR") or None
    start = time.perf_counter()
    if name in DEBUG_MODELS or name in RANDOM_MODELS:
        model, tokenizer = build_offline_model(name)
        melody, source = DEBUG_MODELS.get(name, (1, False))[1], name.split("-")[0]
    elif name in SHIPPED_MODELS:
        folder = shipped_model_dir(name)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{name!r} has no weights in this install ('{folder}' holds no "
                                 "config.json); reinstall musicgen-edu, or use 'debug'.")
        with special_id_past_vocab():
            model, tokenizer, melody, _ = _load_pretrained(str(folder), None, torch_dtype)
        source = name
    elif name.startswith(("debug", "random")):
        raise ModelLoadError(f"unknown offline model {name!r}; choose one of "
                             f"{[*DEBUG_MODELS, *RANDOM_MODELS]}.")
    else:                                           # a hub id or a saved folder: MusicGen too
        with special_id_past_vocab():
            model, tokenizer, melody, source = _load_pretrained(name, cache_dir, torch_dtype)
    model.eval().to(dev)
    model.text_encoder.to(torch_dtype)
    model.decoder.to(torch_dtype)
    model.audio_encoder.to(torch.float32)  # EnCodec is sensitive to reduced precision
    for proj in ("enc_to_dec_proj", "audio_enc_to_dec_proj"):
        if hasattr(model, proj):
            getattr(model, proj).to(torch_dtype)
    loaded = MusicGenModel(name=name, model=model, tokenizer=tokenizer, device=dev,
                           dtype=torch_dtype, is_melody=melody, source=source,
                           load_seconds=time.perf_counter() - start)
    if cache:
        _LOADED[key] = loaded
    return loaded
