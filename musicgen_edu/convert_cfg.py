"""audiocraft's ``xp.cfg`` and transformers' configs, one from the other.

audiocraft rebuilds a model from the hydra config saved with its weights (``xp.cfg``);
transformers from ``config.json``. Each field has its counterpart::

    xp.cfg (audiocraft)                         transformers
    transformer_lm.dim, num_layers, num_heads   decoder.hidden_size, num_hidden_layers, ...
    transformer_lm.hidden_scale * dim           decoder.ffn_dim
    transformer_lm.n_q, card                    decoder.num_codebooks, vocab_size (pad = card)
    codebooks_pattern.delay.delays              [0, 1, 2, 3] mono; [0, 0, 1, 1, ...] stereo
    interleave_stereo_codebooks.use             decoder.audio_channels == 2
    conditioners.description.t5.name            the text encoder (audiocraft: a hub name)
    conditioners.self_wav (chroma_stem)         MusicgenMelody*, num_chroma, chroma_length
    seanet.*, rvq.bins, rvq.n_q                 audio_encoder (EncodecConfig)

Settings transformers' MusicGen has no counterpart for (biases, layer scale, rotary
embeddings, another codebook pattern) raise :class:`~musicgen_edu.errors.ConfigError`.
Follows audiocraft 1.3.0 ``config/model/lm/musicgen_lm.yaml``, ``config/conditioner/
text2music.yaml`` and ``chroma2music.yaml``, ``config/model/encodec/default.yaml`` and
``models/builders.py``; transformers ``models/musicgen/convert_musicgen_transformers.py``.
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError
from .models import MusicGenModel

__all__ = ["lm_cfg", "codec_cfg", "resolve", "conditioner_shapes", "decoder_config",
           "encodec_config", "SUPPORTED"]


def lm_cfg(model: MusicGenModel, t5_name: str) -> dict:
    """The xp.cfg of ``state_dict.bin`` for a transformers model (musicgen_lm.yaml + the
    conditioners, chroma2music.yaml for melody).

    Args:
        model: the model to describe.
        t5_name: ``conditioners.description.t5.name``, the T5 audiocraft loads by name.
    """
    melody = model.is_melody
    dec = model.config.decoder
    channels, n_q = model.audio_channels, int(dec.num_codebooks)
    delays = [k // channels for k in range(n_q)]        # stereo: [0, 0, 1, 1, ...] (L/R pairs)
    ffn, dim = int(dec.ffn_dim), int(dec.hidden_size)
    scale = ffn // dim if ffn % dim == 0 else ffn / dim  # LMModel: int(hidden_scale * dim)
    lm = dict(dim=int(dec.hidden_size), num_heads=int(dec.num_attention_heads),
              num_layers=int(dec.num_hidden_layers), hidden_scale=scale,
              n_q=n_q, card=int(dec.vocab_size), dropout=float(dec.dropout),
              attention_dropout=float(dec.attention_dropout), emb_lr=None,
              activation=dec.activation_function, norm="layer_norm", norm_first=True,
              bias_ff=False, bias_attn=False, bias_proj=False, past_context=None, causal=True,
              custom=False, memory_efficient=True, attention_as_float32=False, layer_scale=None,
              positional_embedding="sin", xpos=False, checkpointing="none",
              weight_init="gaussian", depthwise_init="current", zero_bias_init=True,
              cross_attention=not melody, qk_layer_norm=False, qk_layer_norm_cross=False,
              kv_repeat=1, two_step_cfg=False)
    t5 = dict(model="t5", t5=dict(name=t5_name, finetune=False, word_dropout=0.3,
                                  normalize_text=False))
    conditioners, fuser = dict(description=t5), dict(cross=["description"], prepend=[])
    if melody:  # config/conditioner/chroma2music.yaml: chroma and text are prepended
        chroma = dict(sample_rate=model.sample_rate, n_chroma=int(model.config.num_chroma),
                      radix2_exp=14, argmax=True, match_len_on_eval=False, eval_wavs=None,
                      n_eval_wavs=100, cache_path=None)
        conditioners = dict(self_wav=dict(model="chroma_stem", chroma_stem=chroma), description=t5)
        fuser = dict(cross=[], prepend=["self_wav", "description"])
    return dict(
        lm_model="transformer_lm", device="cpu", dtype="float32", sample_rate=model.sample_rate,
        channels=channels, compression_model_n_q=None,
        interleave_stereo_codebooks=dict(use=channels == 2, per_timestep=False),
        codebooks_pattern=dict(modeling="delay", delay=dict(delays=delays, flatten_first=0,
                                                            empty_initial=0)),
        transformer_lm=lm, classifier_free_guidance=dict(training_dropout=0.3, inference_coef=3.0),
        attribute_dropout={}, conditioners=conditioners,
        fuser=dict(cross_attention_pos_emb=False, cross_attention_pos_emb_scale=1, sum=[],
                   input_interpolate=[], **fuser),
        dataset=dict(segment_duration=float(model.max_duration), sample_rate=model.sample_rate,
                     channels=channels))


def codec_cfg(codec) -> dict:
    """xp.cfg of the EnCodec (config/model/encodec/default.yaml), from an EncodecConfig."""
    c = codec.config
    if c.norm_type != "weight_norm" or c.codebook_dim != c.hidden_size:
        raise ConfigError(f"only weight-norm EnCodecs without a codebook projection convert; "
                          f"this one has norm_type={c.norm_type!r}, codebook_dim={c.codebook_dim} "
                          f"(hidden_size {c.hidden_size}).")
    seanet = dict(dimension=c.hidden_size, channels=c.audio_channels, causal=c.use_causal_conv,
                  n_filters=c.num_filters, n_residual_layers=c.num_residual_layers,
                  ratios=list(c.upsampling_ratios), activation="ELU",
                  activation_params={"alpha": 1.0}, norm="weight_norm", norm_params={},
                  kernel_size=c.kernel_size, residual_kernel_size=c.residual_kernel_size,
                  last_kernel_size=c.last_kernel_size, dilation_base=c.dilation_growth_rate,
                  pad_mode=c.pad_mode, true_skip=not c.use_conv_shortcut, compress=c.compress,
                  lstm=c.num_lstm_layers, disable_norm_outer_blocks=0, encoder={},
                  decoder=dict(trim_right_ratio=c.trim_right_ratio, final_activation=None,
                               final_activation_params=None))
    return dict(compression_model="encodec", device="cpu", dtype="float32",
                sample_rate=c.sampling_rate, channels=c.audio_channels,
                encodec=dict(autoencoder="seanet", quantizer="rvq", sample_rate=c.sampling_rate,
                             channels=c.audio_channels, causal=c.use_causal_conv,
                             renormalize=c.normalize),
                seanet=seanet,
                rvq=dict(n_q=c.num_quantizers, q_dropout=False, bins=c.codebook_size, decay=0.99,
                         kmeans_init=True, kmeans_iters=50, threshold_ema_dead_code=2))


def resolve(cfg, root=None):
    """Replace ``${a.b}`` interpolations (audiocraft stores the config unresolved) by values."""
    root = cfg if root is None else root
    if isinstance(cfg, dict):
        return {k: resolve(v, root) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [resolve(v, root) for v in cfg]
    match = re.fullmatch(r"\$\{([\w.]+)\}", cfg) if isinstance(cfg, str) else None
    if match:
        value = root
        for part in match.group(1).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return resolve(value, root)
    return cfg


def conditioner_shapes(cfg: dict, t5_dim: int) -> dict[str, tuple[int, int]]:
    """conditioner name -> (its output_proj input size, chroma window or 0), the input of
    :func:`~musicgen_edu.convert_keys.audiocraft_lm_shapes`; ConfigError for other kinds."""
    shapes = {}
    for name, cond in (cfg.get("conditioners") or {}).items():
        if name == "args":
            continue
        if cond["model"] == "t5":
            shapes[name] = (t5_dim, 0)
        elif cond["model"] == "chroma_stem":
            args = cond["chroma_stem"]
            shapes[name] = (int(args["n_chroma"]), 2 ** int(args.get("radix2_exp", 12)))
        else:
            raise ConfigError(f"conditioner {name!r} of model {cond['model']!r} has no "
                              "transformers counterpart; text (t5) and melody (chroma_stem) do.")
    return shapes


SUPPORTED = dict(norm_first=True, bias_ff=False, bias_attn=False, bias_proj=False,
                  layer_scale=None, positional_embedding="sin", qk_layer_norm=False,
                  kv_repeat=1, norm="layer_norm", activation="gelu")


def decoder_config(cfg: dict):
    """(transformers decoder config, melody?, cross-attention?) from xp.cfg, or ConfigError
    for what transformers lacks."""
    from transformers import MusicgenDecoderConfig, MusicgenMelodyDecoderConfig

    lm, conditioners = cfg["transformer_lm"], cfg.get("conditioners") or {}
    if (conditioners.get("description") or {}).get("model") != "t5":
        raise ConfigError(f"xp.cfg conditions on {sorted(conditioners)}; transformers' MusicGen "
                          "needs a T5 text conditioner named 'description'.")
    melody = any(c.get("model") == "chroma_stem" for n, c in conditioners.items() if n != "args")
    cross = bool((cfg.get("fuser") or {}).get("cross")) or bool(lm.get("cross_attention"))
    if cross == melody:      # builders.get_lm_model: fusing by cross turns cross-attention on
        raise ConfigError(f"xp.cfg fuses conditions by {cfg.get('fuser')}: transformers' "
                          "MusicGen cross-attends to the text; its melody model prepends chroma "
                          "and text and has no cross-attention.")
    for key, value in SUPPORTED.items():
        if lm.get(key, value) != value:
            raise ConfigError(f"transformer_lm.{key}={lm[key]!r} in xp.cfg; transformers' "
                              f"MusicGen decoder only has {key}={value!r}.")
    stereo = cfg.get("interleave_stereo_codebooks") or {}
    if stereo.get("use") and stereo.get("per_timestep"):
        raise ConfigError("interleave_stereo_codebooks.per_timestep=true in xp.cfg: transformers "
                          "interleaves left and right by codebook (per_timestep=false) only.")
    channels = 2 if stereo.get("use") else 1
    pattern = cfg.get("codebooks_pattern") or {}
    delays = (pattern.get("delay") or {}).get("delays")
    want = [k // channels for k in range(lm["n_q"])]
    if pattern.get("modeling") != "delay" or list(delays or []) != want:
        raise ConfigError(f"codebooks_pattern {pattern.get('modeling')!r} with delays {delays}: "
                          f"transformers generates with the delay pattern {want} only.")
    cls = MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig
    return cls(hidden_size=lm["dim"], num_hidden_layers=lm["num_layers"],
               num_attention_heads=lm["num_heads"], ffn_dim=int(lm.get("hidden_scale", 4) * lm["dim"]),
               vocab_size=lm["card"], num_codebooks=lm["n_q"], audio_channels=channels,
               pad_token_id=lm["card"], bos_token_id=lm["card"], dropout=lm.get("dropout", 0.0),
               attention_dropout=lm.get("attention_dropout") or 0.0,
               activation_function=lm.get("activation", "gelu"),
               tie_word_embeddings=False), melody, cross


def encodec_config(c: dict):
    """The transformers ``EncodecConfig`` of an EnCodec xp.cfg (builders.get_compression_model)."""
    from transformers import EncodecConfig

    seanet, rvq = c["seanet"], c["rvq"]
    rate = int(c["sample_rate"]) // math.prod(seanet["ratios"])
    bits = math.ceil(math.log2(int(rvq["bins"])))
    config = EncodecConfig(
        sampling_rate=int(c["sample_rate"]), audio_channels=int(c["channels"]),
        normalize=bool(c["encodec"].get("renormalize", False)), hidden_size=seanet["dimension"],
        num_filters=seanet["n_filters"], num_residual_layers=seanet["n_residual_layers"],
        upsampling_ratios=list(seanet["ratios"]), norm_type=seanet.get("norm", "weight_norm"),
        kernel_size=seanet["kernel_size"], last_kernel_size=seanet["last_kernel_size"],
        residual_kernel_size=seanet["residual_kernel_size"],
        dilation_growth_rate=seanet["dilation_base"], use_causal_conv=bool(seanet["causal"]),
        pad_mode=seanet["pad_mode"], compress=seanet["compress"], num_lstm_layers=seanet["lstm"],
        trim_right_ratio=seanet["decoder"].get("trim_right_ratio", 1.0),
        codebook_size=int(rvq["bins"]), codebook_dim=seanet["dimension"],
        use_conv_shortcut=not seanet.get("true_skip", True),
        target_bandwidths=[int(rvq["n_q"]) * rate * bits / 1000])  # kbps of n_q codebooks
    if config.num_quantizers != int(rvq["n_q"]):    # float rounding below the floor division
        config.target_bandwidths = [config.target_bandwidths[-1] + 1e-6]
    return config
