"""The physical limit of a decoder step: bytes it must read over the memory bandwidth.

Each step must read every decoder weight and the whole KV cache once, so no implementation
can be faster than ``bytes / bandwidth``. :func:`measure_bandwidth` measures the bandwidth
with a copy benchmark and :func:`decode_bound` divides. Lecture 05 compares measured steps/s
with this bound. The roofline reasoning of Pope et al. 2022 ("Efficiently Scaling Transformer
Inference", sec. 2) and of pytorch-labs/gpt-fast ("model size x tokens/s = achieved
bandwidth").
"""

from __future__ import annotations

import statistics

import torch

from ..backends.linears import DynamicInt8Linear
from ..errors import ConfigError, check_range
from ..generator import MusicGenerator
from ..models import MusicGenModel, resolve_device
from .profiling import check_count, timed

__all__ = ["measure_bandwidth", "decode_bound"]


def measure_bandwidth(device: str | torch.device | None = None, size_mb: float = 256,
                      repeats: int = 10) -> float:
    """Memory bandwidth in GB/s (1e9 bytes/s): the median of timed ``dst.copy_(src)``.

    A copy reads ``size`` bytes and writes ``size`` bytes, so it moves ``2 x size``; the
    source is filled first (untouched pages would all map to one zero page and flatter the
    CPU). One untimed copy warms up; GPU copies are synchronised before and after.

    Args:
        device: ``None``/"auto" (cuda > mps > cpu) or a device.
        size_mb: MiB per tensor, in [1, 16384]; use a size well above the CPU's caches.
        repeats: timed copies, >= 1.
    """
    dev = resolve_device("auto" if device is None else device)
    check_range("size_mb", size_mb, 1, 16384)
    n = int(size_mb * 2**20) // 4                                   # float32 elements
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)                                                  # warm-up, touches dst
    times = [timed(dev, dst.copy_, src) for _ in range(check_count("repeats", repeats, 1))]
    return 2 * n * 4 / statistics.median(times) / 1e9


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the decoder weights one step reads (each tensor once, however shared).

    Left out: the embedding tables (a step reads K rows of them), the position table, and
    the cross-attention key/value projections (applied to the text once per generation).
    """
    skip = ("embed_tokens", "positions", "encoder_attn.k_proj", "encoder_attn.v_proj")
    seen, total = set(), 0
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        key = id(t) if t.is_mkldnn else t.data_ptr()      # packed CPU weights have no pointer
        if any(s in name for s in skip) or key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    for name, child in module.named_modules():  # prepacked int8 (an opaque object, no tensors):
        if isinstance(child, DynamicInt8Linear) and not any(s in name for s in skip):
            total += child.in_features * child.out_features + 4 * child.out_features  # + scales
    return total


def decode_bound(model, device=None, batch_size: int = 1, cache_len: int | None = None,
                 cfg: bool = True, text_len: int = 0, bandwidth_gbs: float | None = None,
                 size_mb: float = 256) -> dict:
    """The fastest one decoder step can be if reading memory were its only cost.

    Each step reads every decoder weight once (whatever the batch) and the KV cache of every
    row::

        kv_bytes = 2 (keys, values) x layers x rows x heads x head_dim x cache_len x dtype bytes
        bound_s_per_step = (weight_bytes + kv_bytes [+ text kv]) / bandwidth

    with ``rows = 2 x batch_size`` under classifier-free guidance. Real steps also compute,
    launch kernels and run Python, so measured steps/s stays below ``bound_steps_per_s``.

    Args:
        model: a loaded MusicGenModel, or a MusicGenerator (then its backend's decoder
            weights are counted, e.g. int8 for "native-int8").
        device: where to measure the bandwidth; default the model's device.
        batch_size: items per step, >= 1.
        cache_len: cached positions a step attends to; default half a full window (the
            average over a 30 s clip). Use ``steps // 2`` for a clip of ``steps`` steps.
        cfg: classifier-free guidance on (doubles the rows).
        text_len: text tokens cross-attended (adds their cached keys/values; 0 = ignore).
        bandwidth_gbs: a known bandwidth in GB/s instead of measuring one.
        size_mb: tensor size of the bandwidth benchmark.

    Returns:
        dict ``model, device, dtype, batch_size, rows, cache_len, weight_bytes, kv_bytes,
        bytes_per_step, bandwidth_gbs, bound_s_per_step, bound_steps_per_s``.
    """
    if isinstance(model, MusicGenerator):
        decoder = model.backend.decoder                   # native: its own weights (else None)
        mg_model = model.model
        decoder = mg_model.model.decoder if decoder is None else decoder
    elif isinstance(model, MusicGenModel):
        decoder, mg_model = model.model.decoder, model
    else:
        raise ConfigError(f"expected a MusicGenModel or MusicGenerator, got "
                          f"{type(model).__name__}; use mg.load_model('debug').")
    cfg_dec = mg_model.config.decoder
    layers, heads = int(cfg_dec.num_hidden_layers), int(cfg_dec.num_attention_heads)
    head_dim = int(cfg_dec.hidden_size) // heads
    rows = check_count("batch_size", batch_size, 1) * (2 if cfg else 1)
    if cache_len is None:
        cache_len = int(mg_model.max_duration * mg_model.frame_rate) // 2
    check_count("cache_len", cache_len, 0)
    check_count("text_len", text_len, 0)
    dtype_bytes = torch.empty((), dtype=mg_model.dtype).element_size()
    weight_bytes = _weight_bytes(decoder)
    text_len = 0 if mg_model.is_melody else text_len                 # melody: text is in the cache
    kv_bytes = 2 * layers * rows * heads * head_dim * (cache_len + text_len) * dtype_bytes
    if bandwidth_gbs is None:
        bandwidth_gbs = measure_bandwidth(device or mg_model.device, size_mb)
    check_range("bandwidth_gbs", bandwidth_gbs, 0, None, low_open=True)
    total = weight_bytes + kv_bytes
    bound = total / (bandwidth_gbs * 1e9)
    return dict(model=mg_model.name, device=str(device or mg_model.device),
                dtype=str(mg_model.dtype).replace("torch.", ""), batch_size=batch_size,
                rows=rows, cache_len=cache_len, text_len=text_len, weight_bytes=weight_bytes,
                kv_bytes=kv_bytes, bytes_per_step=total, bandwidth_gbs=float(bandwidth_gbs),
                bound_s_per_step=bound, bound_steps_per_s=1 / bound)
