"""Convert MusicGen checkpoints both ways between audiocraft and transformers folders.

Two layouts of one model (weights renamed by ``convert_keys.py``, configs translated by
``convert_cfg.py``; this file reads and writes the files)::

    audiocraft folder                              transformers folder (save_pretrained)
    state_dict.bin          LM + text projection   config.json, generation_config.json,
      {'xp.cfg': YAML text, 'best_state': {...},   model.safetensors (T5 + EnCodec + decoder),
       'version', 'exported'}                      tokenizer and processor files
    compression_state_dict.bin   EnCodec
      {'xp.cfg', 'best_state'} or {'pretrained': 'facebook/encodec_32khz'}
    t5/   the T5 text encoder as a transformers folder (written by to_audiocraft; audiocraft
          itself loads its T5 by hub name, ``conditioners.description.t5.name`` in xp.cfg)

The path of one conversion::

    to_audiocraft:   load_model(name | folder) -> rename + stack q,k,v -> xp.cfg from the
                     configs -> check against the shapes LMModel would build -> torch.save x2
    from_audiocraft: torch.load(weights_only) -> xp.cfg (YAML) -> transformers configs ->
                     check shapes -> split in_proj -> build + load_state_dict -> save_pretrained

The ``xp.cfg`` written is the subset of audiocraft's hydra config (``config/model/lm/
musicgen_lm.yaml``, ``config/conditioner/text2music.yaml``, ``config/model/encodec/``) that
``audiocraft.models.loaders.load_lm_model`` / ``load_compression_model`` read; it is stored as a
YAML string, as audiocraft's own ``utils/export.py`` does, so ``torch.load(weights_only=True)``
reads both files. Follows transformers ``models/musicgen/convert_musicgen_transformers.py``
(which only goes from audiocraft to transformers) and audiocraft 1.3.0 ``models/loaders.py``,
``models/builders.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from .convert_cfg import (
    codec_cfg,
    conditioner_shapes,
    decoder_config,
    encodec_config,
    lm_cfg,
    resolve,
)
from .convert_keys import (
    WINDOW_KEY,
    audiocraft_lm_shapes,
    check_shapes,
    codec_from_audiocraft,
    codec_to_audiocraft,
    lm_from_audiocraft,
    lm_to_audiocraft,
)
from .errors import ConfigError, ModelLoadError
from .models import MusicGenModel, as_model, load_model

__all__ = ["to_audiocraft", "from_audiocraft", "is_audiocraft_folder", "read_audiocraft",
           "LM_FILE", "CODEC_FILE", "T5_DIR", "AUDIOCRAFT_T5_NAMES"]

LM_FILE, CODEC_FILE, T5_DIR = "state_dict.bin", "compression_state_dict.bin", "t5"
# T5 models audiocraft's T5Conditioner accepts by name (modules/conditioners.py, MODELS)
AUDIOCRAFT_T5_NAMES = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b",
                       "google/flan-t5-small", "google/flan-t5-base", "google/flan-t5-large",
                       "google/flan-t5-xl", "google/flan-t5-xxl")
_VERSION = "1.3.0"  # the audiocraft release whose loaders these files are written for


# --- reading and writing the audiocraft files -----------------------------------------------

def is_audiocraft_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding audiocraft's ``state_dict.bin``."""
    return (Path(path) / LM_FILE).is_file()


def read_audiocraft(path: str | Path, trusted: bool = False) -> dict:
    """Load one audiocraft checkpoint file, its ``xp.cfg`` as a plain resolved dict.

    Args:
        path: ``state_dict.bin`` or ``compression_state_dict.bin``.
        trusted: also read files that pickle Python objects (older exports store ``xp.cfg``
            as an OmegaConf object); only for files from a source you trust.

    Raises:
        ModelLoadError: the file is missing or cannot be read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist; an audiocraft folder holds {LM_FILE} and "
                             f"{CODEC_FILE} (e.g. a copy of the facebook/musicgen-small hub repo).")
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as err:  # UnpicklingError (objects) or a broken file
        raise ModelLoadError(f"cannot read {path} with weights_only=True ({type(err).__name__}: "
                             f"{str(err)[:200]}). If it stores Python objects and you trust its "
                             "source, pass trusted=True (CLI: --trusted).") from None
    if not isinstance(pkg, dict) or not ({"best_state", "pretrained"} & set(pkg)):
        held = sorted(map(str, pkg))[:10] if isinstance(pkg, dict) else type(pkg).__name__
        raise ModelLoadError(f"{path} is not an audiocraft checkpoint: expected a dict with "
                             f"'xp.cfg' and 'best_state', got {held}.")
    cfg = pkg.get("xp.cfg", {})
    if not isinstance(cfg, (str, dict)):   # an OmegaConf DictConfig (trusted files only)
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(cfg)
    pkg["xp.cfg"] = resolve(yaml.safe_load(cfg) if isinstance(cfg, str) else dict(cfg))
    return pkg


def _save(pkg: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(pkg, tmp)
    tmp.replace(path)        # atomic: an interrupted conversion leaves no half file


def to_audiocraft(model_or_folder: str | Path | MusicGenModel, out_dir: str | Path,
                  t5_name: str | None = None) -> Path:
    """Write a transformers MusicGen as an audiocraft folder.

    Args:
        model_or_folder: a model from ``load_model``, a ``MusicGenerator``, or what
            ``load_model`` accepts (``"debug"``, a hub id, a ``save_pretrained`` folder such
            as a ``train`` run's ``model/``).
        out_dir: the folder to write (created; files in it are replaced).
        t5_name: the T5 name written to xp.cfg (audiocraft loads its T5 by this name). Default:
            the text encoder's own hub name if audiocraft knows it (``t5-base`` for the
            published MusicGens), else ``"t5"``, the folder written beside the weights (then
            audiocraft needs that name registered, see docs/convert.md).

    Returns:
        ``out_dir``, holding state_dict.bin, compression_state_dict.bin and t5/.
    """
    if isinstance(model_or_folder, (str, Path)):
        model = load_model(str(model_or_folder), device="cpu", dtype="float32", cache=False)
    else:
        model = as_model(model_or_folder)
    melody = model.is_melody
    if t5_name is None:
        own = model.config.text_encoder.name_or_path      # "t5-base" in the hub configs
        t5_name = own if own in AUDIOCRAFT_T5_NAMES else T5_DIR
    cfg = lm_cfg(model, t5_name)
    state = model.model.state_dict()
    best, left = lm_to_audiocraft(state)
    if left:
        raise ModelLoadError(f"{model.name}: {len(left)} weight(s) have no audiocraft name: "
                             f"{', '.join(left[:20])}. Only MusicGen (and melody) convert.")
    if melody:  # the chroma STFT window audiocraft keeps in its state (torchaudio's default)
        best[WINDOW_KEY] = torch.hann_window(2 ** 14)
    t5_dim = int(model.config.text_encoder.d_model)
    check_shapes(best, audiocraft_lm_shapes(cfg["transformer_lm"], conditioner_shapes(cfg, t5_dim)),
                 f"the conversion of {model.name}")
    codec_state, left = codec_to_audiocraft(model.model.audio_encoder)
    if left:
        raise ModelLoadError(f"{model.name}: EnCodec weight(s) without an audiocraft name: "
                             f"{', '.join(left[:20])}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(version=_VERSION, exported=True, musicgen_edu=dict(source=model.name, t5=T5_DIR))
    for tensors, config, name in [(best, cfg, LM_FILE),
                                  (codec_state, codec_cfg(model.model.audio_encoder), CODEC_FILE)]:
        _save({"best_state": {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
               "xp.cfg": yaml.safe_dump(config, sort_keys=False), **meta}, out / name)
    model.model.text_encoder.save_pretrained(out / T5_DIR)
    model.tokenizer.save_pretrained(out / T5_DIR)
    return out


# --- audiocraft -> transformers -------------------------------------------------------------

def _codec(pkg: dict):
    """The transformers EncodecModel of compression_state_dict.bin (a hub name or weights)."""
    from transformers import EncodecModel

    if "pretrained" in pkg:   # the published MusicGens: {'pretrained': 'facebook/encodec_32khz'}
        try:
            return EncodecModel.from_pretrained(pkg["pretrained"])
        except OSError as err:
            raise ModelLoadError(f"{CODEC_FILE} names the EnCodec {pkg['pretrained']!r}, which "
                                 f"could not be loaded ({err}); it needs the hub once.") from None
    codec = EncodecModel(encodec_config(pkg["xp.cfg"]))
    state, left = codec_from_audiocraft(pkg["best_state"], parametrized=any(
        "parametrizations" in k for k in codec.state_dict()))
    if left:
        raise ModelLoadError(f"{CODEC_FILE}: {len(left)} unknown key(s): {', '.join(left[:20])}.")
    check_shapes(state, {k: tuple(v.shape) for k, v in codec.state_dict().items()}, CODEC_FILE)
    codec.load_state_dict(state)
    return codec


def from_audiocraft(folder: str | Path, out_dir: str | Path, t5: str | None = None,
                    trusted: bool = False) -> Path:
    """Write an audiocraft MusicGen folder as a transformers folder ``load_model`` loads.

    Args:
        folder: holds state_dict.bin and compression_state_dict.bin (e.g. a download of the
            facebook/musicgen-small hub repo, or what ``to_audiocraft`` wrote).
        out_dir: the transformers folder to write (``save_pretrained``).
        t5: the T5 text encoder and tokenizer, a transformers folder or hub name. Default:
            ``folder/t5`` if it exists, else the name in xp.cfg (``t5-base``: needs the hub or
            its cache). T5 weights inside state_dict.bin (audiocraft ``finetune: true``) win.
        trusted: read files that pickle Python objects (see :func:`read_audiocraft`).

    Returns:
        ``out_dir``.
    """
    from transformers import (
        AutoTokenizer,
        EncodecFeatureExtractor,
        MusicgenForCausalLM,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyFeatureExtractor,
        MusicgenMelodyForCausalLM,
        MusicgenMelodyForConditionalGeneration,
        MusicgenMelodyProcessor,
        MusicgenProcessor,
        T5EncoderModel,
    )

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder; give the folder holding {LM_FILE}.")
    lm_pkg = read_audiocraft(folder / LM_FILE, trusted)
    codec_pkg = read_audiocraft(folder / CODEC_FILE, trusted)
    cfg = lm_pkg["xp.cfg"]
    if "transformer_lm" not in cfg:
        raise ModelLoadError(f"{folder / LM_FILE} has no transformer_lm section in its xp.cfg; "
                             "is it a MusicGen language model?")
    dec_config, melody, cross = decoder_config(cfg)  # what transformers lacks: ConfigError
    text = cfg["conditioners"]["description"]["t5"]
    source = t5 or (str(folder / T5_DIR) if (folder / T5_DIR).is_dir() else text["name"])
    try:
        text_encoder = T5EncoderModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise ModelLoadError(f"cannot load the T5 text encoder {source!r} ({err}); pass t5= "
                             "(CLI: --t5) a transformers folder or hub name.") from None
    best = lm_pkg["best_state"]
    prefix = "condition_provider.conditioners.description.t5."
    if any(k.startswith(prefix) for k in best):   # audiocraft fine-tuned the T5 (finetune: true)
        text_encoder.load_state_dict({k[len(prefix):]: v for k, v in best.items()
                                      if k.startswith(prefix)})
    expected = audiocraft_lm_shapes(cfg["transformer_lm"] | {"cross_attention": cross},
                                    conditioner_shapes(cfg, int(text_encoder.config.d_model)))
    check_shapes(best, expected, str(folder / LM_FILE), ignore=(prefix,))
    state, left = lm_from_audiocraft(best)
    if left:
        raise ModelLoadError(f"{folder / LM_FILE}: {len(left)} key(s) without a transformers "
                             f"name: {', '.join(left[:20])}.")
    codec = _codec(codec_pkg)
    per_channel = dec_config.num_codebooks // dec_config.audio_channels
    if codec.config.num_quantizers != per_channel:   # e.g. compression_model_n_q in xp.cfg
        raise ConfigError(f"the LM models {per_channel} codebooks per channel but the EnCodec of "
                          f"{CODEC_FILE} has {codec.config.num_quantizers}; transformers decodes "
                          "with all of EnCodec's codebooks, so they must match.")
    decoder = (MusicgenMelodyForCausalLM if melody else MusicgenForCausalLM)(dec_config)
    cls = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    config = None
    if melody:   # the chroma's size and frames per window, before the projection is built
        chroma = cfg["conditioners"]["self_wav"]["chroma_stem"]
        hop = 2 ** int(chroma.get("radix2_exp", 12)) // 4
        samples = int(codec.config.sampling_rate * float(cfg["dataset"]["segment_duration"]))
        config = MusicgenMelodyConfig(
            text_encoder=text_encoder.config.to_dict(), audio_encoder=codec.config.to_dict(),
            decoder=dec_config.to_dict(), num_chroma=int(chroma["n_chroma"]),
            chroma_length=1 + samples // hop)               # STFT frames of one window
    model = cls(config=config, text_encoder=text_encoder, audio_encoder=codec, decoder=decoder)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()
           if not k.startswith(("text_encoder.", "audio_encoder."))}
    check_shapes(state, own, str(folder / LM_FILE))
    model.load_state_dict(state, strict=False)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = int(cfg["transformer_lm"]["card"])
    gen.max_length = int(float(cfg["dataset"]["segment_duration"]) * codec.config.frame_rate)
    gen.do_sample = True
    gen.guidance_scale = float(cfg.get("classifier_free_guidance", {}).get("inference_coef", 3.0))
    out = Path(out_dir)
    model.save_pretrained(out)
    try:  # the processor (tokenizer + feature extractor), as the hub repos hold it
        extractor = (MusicgenMelodyFeatureExtractor(sampling_rate=codec.config.sampling_rate)
                     if melody else EncodecFeatureExtractor(
                         feature_size=codec.config.audio_channels,
                         sampling_rate=codec.config.sampling_rate, padding_side="left"))
        (MusicgenMelodyProcessor if melody else MusicgenProcessor)(
            feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    except ImportError:  # the melody feature extractor needs torchaudio: the tokenizer alone
        tokenizer.save_pretrained(out)
    return out
