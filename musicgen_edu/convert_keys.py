"""Weight names of MusicGen in audiocraft and in transformers, and the map between them.

The same network is saved under two vocabularies. One table row per tensor family, written
with placeholders (``{i}`` a layer or codebook index, ``{p}`` weight or bias), maps both ways::

    transformers (MusicgenForConditionalGeneration)           audiocraft (LMModel best_state)
    decoder.model.decoder.embed_tokens.{i}.weight          <-> emb.{i}.weight
    decoder.model.decoder.layers.{i}.self_attn.q|k|v_proj  <-> transformer.layers.{i}.self_attn
                                                               .in_proj_weight  ([q; k; v] rows)
    decoder.model.decoder.layers.{i}.fc1 / fc2             <-> transformer.layers.{i}.linear1 / 2
    decoder.lm_heads.{i}.weight                            <-> linears.{i}.weight
    enc_to_dec_proj.{p}                                    <-> condition_provider.conditioners
                                                               .description.output_proj.{p}

EnCodec: transformers' ``encoder.layers.{i}.conv.parametrizations.weight.original0`` is
audiocraft's ``encoder.model.{i}.conv.conv.weight_g`` (weight norm's g; ``original1`` is v), a
transposed convolution of the decoder is ``convtr.convtr``, and the residual quantizer's
``quantizer.layers.{i}.codebook`` is ``quantizer.vq.layers.{i}._codebook``.

Follows transformers ``models/musicgen/convert_musicgen_transformers.py`` (one way: audiocraft to
transformers), ``models/musicgen_melody/convert_musicgen_melody_transformers.py`` and
``models/musicgen/encodec_audiocraft_to_hf.py``; the audiocraft shapes follow audiocraft 1.3.0
``models/lm.py`` (``LMModel``) and ``modules/transformer.py`` (``StreamingMultiheadAttention``
with ``custom`` or ``memory_efficient`` attention keeps q, k and v in one ``in_proj_weight``).
"""

from __future__ import annotations

import re

import torch

from .errors import ModelLoadError

__all__ = ["LM_KEYS", "FUSED_KEYS", "CODEC_KEYS", "lm_to_audiocraft", "lm_from_audiocraft",
           "codec_to_audiocraft", "codec_from_audiocraft", "audiocraft_lm_shapes",
           "check_shapes"]

_D = "decoder.model.decoder."
_A = "condition_provider.conditioners."
LM_KEYS: list[tuple[str, str]] = [  # (transformers, audiocraft) for the decoder and projections
    (_D + "embed_tokens.{i}.weight", "emb.{i}.weight"),
    (_D + "layers.{i}.self_attn.out_proj.weight", "transformer.layers.{i}.self_attn.out_proj.weight"),
    (_D + "layers.{i}.encoder_attn.out_proj.weight",
     "transformer.layers.{i}.cross_attention.out_proj.weight"),
    (_D + "layers.{i}.self_attn_layer_norm.{p}", "transformer.layers.{i}.norm1.{p}"),
    (_D + "layers.{i}.encoder_attn_layer_norm.{p}", "transformer.layers.{i}.norm_cross.{p}"),
    (_D + "layers.{i}.final_layer_norm.{p}", "transformer.layers.{i}.norm2.{p}"),
    (_D + "layers.{i}.fc1.weight", "transformer.layers.{i}.linear1.weight"),
    (_D + "layers.{i}.fc2.weight", "transformer.layers.{i}.linear2.weight"),
    (_D + "layer_norm.{p}", "out_norm.{p}"),
    ("decoder.lm_heads.{i}.weight", "linears.{i}.weight"),
    ("enc_to_dec_proj.{p}", _A + "description.output_proj.{p}"),
    ("audio_enc_to_dec_proj.{p}", _A + "self_wav.output_proj.{p}"),   # melody: chroma -> dim
]
FUSED_KEYS: list[tuple[str, str]] = [  # ({} = q, k, v) three matrices <-> one stacked matrix
    (_D + "layers.{i}.self_attn.{}_proj.weight", "transformer.layers.{i}.self_attn.in_proj_weight"),
    (_D + "layers.{i}.encoder_attn.{}_proj.weight",
     "transformer.layers.{i}.cross_attention.in_proj_weight"),
]
_G, _V = "parametrizations.weight.original0", "parametrizations.weight.original1"
CODEC_KEYS: list[tuple[str, str]] = [  # EnCodec, SEANet encoder/decoder + residual VQ
    ("{e}.layers.{i}.conv.{w}", "{e}.model.{i}.conv.conv.{w}"),
    ("{e}.layers.{i}.block.{j}.conv.{w}", "{e}.model.{i}.block.{j}.conv.conv.{w}"),
    ("{e}.layers.{i}.shortcut.conv.{w}", "{e}.model.{i}.shortcut.conv.conv.{w}"),
    ("{e}.layers.{i}.lstm.{l}", "{e}.model.{i}.lstm.{l}"),
    ("quantizer.layers.{i}.codebook.{b}", "quantizer.vq.layers.{i}._codebook.{b}"),
]
_SLOTS = {"i": r"\d+", "j": r"\d+", "p": r"weight|bias", "e": r"encoder|decoder",
          "w": r"bias|weight_g|weight_v|weight", "l": r"(?:weight|bias)_(?:ih|hh)_l\d+",
          "b": r"inited|cluster_size|embed_avg|embed"}
WINDOW_KEY = _A + "self_wav.chroma.spec.window"   # melody: the STFT window of the chroma


def _regex(template: str) -> re.Pattern:
    """``"emb.{i}.weight"`` -> ``^emb\\.(?P<i>\\d+)\\.weight$``."""
    parts = re.split(r"\{(\w)\}", template)
    body = "".join(re.escape(p) if n % 2 == 0 else f"(?P<{p}>{_SLOTS[p]})"
                   for n, p in enumerate(parts))
    return re.compile(f"^{body}$")


def _rename(key: str, table: list[tuple[str, str]], to_audiocraft: bool) -> str | None:
    """The other side's name of ``key`` by the first row that matches it; None if none does."""
    for hf, ac in table:
        source, target = (hf, ac) if to_audiocraft else (ac, hf)
        match = _regex(source).match(key)
        if match:
            return target.format(**match.groupdict())
    return None


def lm_to_audiocraft(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Decoder and projections of a transformers state dict -> audiocraft LM ``best_state``.

    Args:
        state: ``MusicgenForConditionalGeneration.state_dict()`` (text and audio encoders are
            skipped: audiocraft keeps them in other files).

    Returns:
        (best_state, keys of ``state`` that no row maps: empty unless the model is not MusicGen).
    """
    out, left = {}, []
    fused = [(_regex(hf.replace("{}", "q")), ac) for hf, ac in FUSED_KEYS]
    for key, value in state.items():
        if key.startswith(("text_encoder.", "audio_encoder.")):
            continue
        for pattern, ac in fused:
            match = pattern.match(key)
            if match:  # in_proj_weight = [q; k; v] stacked on the output rows: [3D, D]
                out[ac.format(**match.groupdict())] = torch.cat(
                    [state[key.replace(".q_proj.", f".{x}_proj.")] for x in "qkv"])
                break
        else:
            if re.search(r"\.(k|v)_proj\.weight$", key):
                continue                      # taken with its q_proj above
            name = _rename(key, LM_KEYS, to_audiocraft=True)
            if name is None:
                left.append(key)
            else:
                out[name] = value
    return out, left


def lm_from_audiocraft(best_state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Audiocraft LM ``best_state`` -> transformers names (decoder and projections).

    Returns:
        (state, audiocraft keys that no row maps). The melody chroma window (a fixed Hann
        window, rebuilt by audiocraft) and fine-tuned T5 weights (``...description.t5.*``,
        read by the caller) are not reported.
    """
    out, left = {}, []
    fused = [(_regex(ac), hf) for hf, ac in FUSED_KEYS]
    for key, value in best_state.items():
        if key == WINDOW_KEY or key.startswith(_A + "description.t5."):
            continue
        for pattern, hf in fused:
            match = pattern.match(key)
            if match:  # split [3D, D] rows back into q, k and v
                for x, part in zip("qkv", value.chunk(3, dim=0)):
                    out[hf.replace("{}", x).format(**match.groupdict())] = part.clone()
                break
        else:
            name = _rename(key, LM_KEYS, to_audiocraft=False)
            if name is None:
                left.append(key)
            else:
                out[name] = value
    return out, left


def _g_v(key: str, to_audiocraft: bool) -> str:
    """Weight norm's g and v: ``parametrizations.weight.original0/1`` <-> ``weight_g/v``."""
    pairs = [(_G, "weight_g"), (_V, "weight_v")]
    for new, old in pairs:
        key = key.replace(new, old) if to_audiocraft else key.replace(old, new)
    return key


def codec_to_audiocraft(codec: torch.nn.Module) -> tuple[dict, list[str]]:
    """A transformers ``EncodecModel`` -> audiocraft ``CompressionModel`` ``best_state``.

    Returns:
        (best_state, keys no row maps). Transposed convolutions (the decoder's upsampling
        layers) are found by their module type, as the names alone do not tell them apart.
    """
    transposed = {name for name, m in codec.named_modules() if isinstance(m, torch.nn.ConvTranspose1d)}
    out, left = {}, []
    for key, value in codec.state_dict().items():
        name = _rename(_g_v(key, True), CODEC_KEYS, to_audiocraft=True)
        if name is None:
            left.append(key)
            continue
        module = key.rsplit(".conv.", 1)[0] + ".conv" if ".conv." in key else ""
        if module in transposed:
            name = name.replace(".conv.conv.", ".convtr.convtr.")
        out[name] = value
    return out, left


def codec_from_audiocraft(best_state: dict, parametrized: bool = True) -> tuple[dict, list[str]]:
    """Audiocraft EnCodec ``best_state`` -> transformers ``EncodecModel`` names.

    Args:
        best_state: the ``best_state`` of ``compression_state_dict.bin``.
        parametrized: the target names weight norm as ``parametrizations.weight.original0/1``
            (torch's new weight norm, transformers >= 4.40); False: ``weight_g/v``.
    """
    out, left = {}, []
    for key, value in best_state.items():
        name = _rename(key.replace(".convtr.convtr.", ".conv.conv."), CODEC_KEYS, False)
        if name is None:
            left.append(key)
        else:
            out[_g_v(name, False) if parametrized else name] = value
    return out, left


def audiocraft_lm_shapes(lm: dict, conditioners: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the ``best_state`` audiocraft's ``LMModel`` has for this config.

    Derived from audiocraft 1.3.0 ``LMModel.__init__`` and ``StreamingTransformerLayer``:
    ``n_q`` embeddings of ``card + 1`` rows (the extra row is the special token), per layer a
    packed self-attention (and a cross-attention when the text is fused by ``cross``), two
    feed-forward linears and two (three) layer norms, ``out_norm`` with pre-norm, ``n_q`` heads.

    Args:
        lm: the ``transformer_lm`` section of ``xp.cfg``.
        conditioners: name -> (input size of its ``output_proj``, chroma window length or 0).
    """
    dim, card, n_q = lm["dim"], lm["card"], lm["n_q"]
    ffn = int(lm.get("hidden_scale", 4) * dim)
    shapes: dict[str, tuple[int, ...]] = {}
    bias = lambda flag, key, size: shapes.update({key: (size,)} if flag else {})  # noqa: E731
    for k in range(n_q):
        shapes[f"emb.{k}.weight"] = (card + 1, dim)
        shapes[f"linears.{k}.weight"] = (card, dim)
        bias(lm.get("bias_proj", True), f"linears.{k}.bias", card)
    attention = ["self_attn"] + (["cross_attention"] if lm.get("cross_attention") else [])
    for i in range(lm["num_layers"]):
        layer = f"transformer.layers.{i}."
        for att in attention:
            shapes[layer + f"{att}.in_proj_weight"] = (3 * dim, dim)
            shapes[layer + f"{att}.out_proj.weight"] = (dim, dim)
            bias(lm.get("bias_attn", True), layer + f"{att}.in_proj_bias", 3 * dim)
            bias(lm.get("bias_attn", True), layer + f"{att}.out_proj.bias", dim)
        shapes[layer + "linear1.weight"] = (ffn, dim)
        shapes[layer + "linear2.weight"] = (dim, ffn)
        bias(lm.get("bias_ff", True), layer + "linear1.bias", ffn)
        bias(lm.get("bias_ff", True), layer + "linear2.bias", dim)
        for norm in ["norm1", "norm2"] + (["norm_cross"] if len(attention) == 2 else []):
            shapes[layer + f"{norm}.weight"] = shapes[layer + f"{norm}.bias"] = (dim,)
    if lm.get("norm_first"):
        shapes["out_norm.weight"] = shapes["out_norm.bias"] = (dim,)
    for name, (size, window) in conditioners.items():
        shapes[f"{_A}{name}.output_proj.weight"] = (dim, size)
        shapes[f"{_A}{name}.output_proj.bias"] = (dim,)
        if window:
            shapes[f"{_A}{name}.chroma.spec.window"] = (window,)
    return shapes


def check_shapes(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                 where: str, ignore: tuple[str, ...] = ()) -> None:
    """Raise ModelLoadError naming unknown keys, missing keys and every shape mismatch.

    Args:
        state: the tensors at hand.
        expected: key -> the shape the receiving model has.
        where: the file or model the tensors come from, for the message.
        ignore: prefixes of keys that are neither unknown nor checked.
    """
    keys = [k for k in state if not k.startswith(ignore)] if ignore else list(state)
    unknown = sorted(set(keys) - set(expected))
    missing = sorted(set(expected) - set(state))
    wrong = [f"{k}: {tuple(state[k].shape)} in {where} but {expected[k]} in the model"
             for k in keys if k in expected and tuple(state[k].shape) != tuple(expected[k])]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s): {', '.join(unknown[:20])}"
                        + (" ..." if len(unknown) > 20 else ""))
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:20])}"
                        + (" ..." if len(missing) > 20 else ""))
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:20]))
    if problems:
        raise ModelLoadError(f"the weights of {where} do not fit the model its config describes: "
                             + ". ".join(problems) + ". Was the file written for another "
                             "model (size, codebooks, melody) or edited? Convert the checkpoint "
                             "again from its source.")
