"""Turning one decoder step's logits into tokens: CFG, temperature, top-k, top-p, sampling.

Every backend's decoder loop calls these functions, and lecture 04 calls them one by one to
plot the distribution before and after each filter. They reproduce transformers' logits
processors bit for bit (``ClassifierFreeGuidanceLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper`` in ``generation/logits_process.py``) so that our
loop generates exactly what ``model.generate`` generates under the same seed; audiocraft's
``utils/utils.py::sample_top_k / sample_top_p`` compute the same distributions.

Order of operations for one step (logits ``[B, K, V]``: batch, codebooks, vocabulary):

    1. classifier-free guidance   l = l_uncond + scale * (l_cond - l_uncond)
    2. temperature                l = l / T
    3. top-k                      keep the k largest logits, the rest -> -inf
    4. top-p (nucleus)            keep the smallest set whose probability mass >= p
    5. the draw, one per (item, codebook), by one of two samplers:
       "counter" (default)        the Gumbel-max trick, argmax(l + G), with the noise G a
                                  pure function of (item seed, step, codebook, token): the
                                  whole batch in a few tensor ops
       "reference"                softmax + multinomial with one torch.Generator per item,
                                  exactly what transformers' ``generate`` draws

Why two. ``reference`` reproduces transformers token for token (the proof that our loop is
MusicGen's), but it needs a Python loop over the batch with one ``multinomial`` per item,
each with its own checks and launches, and a generator's state lives outside any CUDA graph.
``counter`` has no state at all: its noise comes from a counter-based hash (Salmon et al.
2011, "Parallel random numbers: as easy as 1, 2, 3", the idea behind Philox) and the draw is
the Gumbel-max trick (Gumbel 1954; Jang et al. 2017), so item i's tokens depend only on its
own seed: a batch item equals the same prompt alone, run after run, with the same noise on
CPU and GPU.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["classifier_free_guidance", "apply_temperature", "top_k_filter", "top_p_filter",
           "process_logits", "sample_tokens", "counter_uniform", "sample_counter", "draw_tokens",
           "Sampling", "SAMPLERS"]

SAMPLERS = ("counter", "reference")  # GenerationConfig.sampler: batched Gumbel-max, transformers

NEG_INF = -float("inf")


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Push the conditional logits away from the unconditional (or negative-prompt) ones.

    ``scale = 1`` returns ``cond``; MusicGen's default is 3 (Ho & Salimans 2022; MusicGen sec. 4).
    """
    return uncond + (cond - uncond) * scale


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dimension; ``k = 0`` keeps all."""
    if k <= 0:
        return logits
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k)[0][..., -1, None]
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their mass reaches ``p``.

    ``p <= 0`` or ``p >= 1`` keeps all (0 is audiocraft's "off"). Works on any leading shape.
    """
    if p <= 0.0 or p >= 1.0:
        return logits
    flat = logits.reshape(-1, logits.shape[-1])
    sorted_logits, sorted_idx = torch.sort(flat, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)                        # the unlikely tail
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)  # back to vocabulary order
    return flat.masked_fill(remove, NEG_INF).reshape(logits.shape)


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 0.0) -> torch.Tensor:
    """Steps 2-4 above, in transformers' order, on float32 logits ``[..., V]``."""
    logits = logits.float()
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    return top_p_filter(logits, top_p)


def sample_tokens(logits: torch.Tensor, generators: list[torch.Generator] | None = None,
                  greedy: bool = False) -> torch.Tensor:
    """Draw one token per row from processed logits ``[B, K, V]`` -> tokens ``[B, K]``.

    Args:
        logits: processed logits, -inf where filtered out.
        generators: one ``torch.Generator`` per batch item (per-item seeds); ``None`` uses
            torch's global RNG for the whole batch in one draw, like transformers.
        greedy: take the argmax instead of sampling (no randomness consumed).
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    batch, num_codebooks, vocab = probs.shape
    if generators is None:
        return torch.multinomial(probs.reshape(-1, vocab), 1).view(batch, num_codebooks)
    draws = [torch.multinomial(probs[b], 1, generator=generators[b]) for b in range(batch)]
    return torch.stack([d[:, 0] for d in draws])  # [B, K]


# --- the counter-based sampler -------------------------------------------------------------
# 32-bit integer hashing written with int64 tensors so that no product overflows (torch has no
# unsigned 32-bit multiply on every device): x < 2^32 times a 16-bit half of the constant stays
# below 2^48, and only the low 32 bits of the product are kept, as in C's uint32 arithmetic.
_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2^32`` for int64 tensors ``0 <= x < 2^32`` and a 32-bit constant ``c``."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser ``fmix32``: every input bit flips each output bit with p = 1/2."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def counter_uniform(seeds: torch.Tensor, step, num_codebooks: int,
                    tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform noise in (0, 1), a pure function of (seed, step, codebook[, token]).

    Args:
        seeds: ``[B]`` int64, one seed per item (``0 <= seed < 2^63``).
        step: the decoding step, an ``int`` or an int64 tensor ``[1]`` (inside a CUDA graph).
        num_codebooks: K.
        tokens: token ids ``[B, K, n]`` (int64): one uniform per token, ``[B, K, n]``;
            ``None``: one per (item, codebook), ``[B, K]``.

    Rounds of ``fmix32`` chain the seed's two halves, the step, the codebook (and the token)
    into a 32-bit hash; its top 23 bits, centred, are the uniform: exact in float32, never 0,
    never 1.
    """
    dev = seeds.device
    h = _mix32((seeds & _MASK32) ^ 0x9E3779B9)                          # [B]
    h = _mix32(h ^ ((seeds >> 32) & _MASK32))
    h = _mix32(h ^ (torch.as_tensor(step, device=dev).reshape(-1) & _MASK32))
    codebook = torch.arange(num_codebooks, device=dev) * 0x632BE5AB & _MASK32   # [K]
    h = _mix32(_mix32(h[:, None] ^ codebook))                               # [B, K]
    if tokens is not None:
        h = _mix32(h[..., None] ^ (tokens & _MASK32))                       # [B, K, n]
    return ((h >> 9).float() + 0.5) * (1.0 / 2**23)


def sample_counter(logits: torch.Tensor, seeds: torch.Tensor, step, top_k: int = 0) -> torch.Tensor:
    """Draw one token per (item, codebook) from processed logits ``[B, K, V]`` -> ``[B, K]``.

    The Gumbel-max trick: ``argmax(logits + G)`` with ``G = -log(-log(U))`` and ``U`` one
    :func:`counter_uniform` per (item, codebook, token) is a sample of ``softmax(logits)``;
    filtered (-inf) tokens are never drawn. With ``top_k`` (the filter already applied) only
    the k candidates get noise: the same draw, for k instead of V uniforms. There is no
    generator state, no Python loop over the batch and no host synchronisation, so the draw
    can be captured in a CUDA graph.

    Why Gumbel and not one uniform through the cumulative distribution (V times cheaper)? The
    draw must also be *stable*: the same seed on another device, precision or batch size
    gives logits that differ in the last bits, and the inverse CDF turns such differences
    into another token far more often, because every token's interval moves with the sum of
    the errors before it in vocabulary order. With the Gumbel race a token changes only when
    two noisy scores were nearly tied. Measured bf16 against fp32, the race keeps far more
    tokens than the inverse CDF (bench/README.md, section "The counter sampler's stability").
    """
    logits = logits.float()
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:                                 # only the candidates need noise
        logits, ids = logits.topk(top_k, dim=-1)                           # [B, K, k]
    else:
        ids = torch.arange(vocab, device=logits.device).expand(logits.shape)
    gumbel = -torch.log(-torch.log(counter_uniform(seeds, step, logits.shape[1], ids)))
    best = (logits + gumbel).argmax(dim=-1, keepdim=True)                  # [B, K, 1]
    return ids.gather(-1, best)[..., 0]


# --- one step, end to end --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sampling:
    """One generation's way from logits to tokens: the settings of steps 1-5 as one value.

    Fixed for all the generation's steps, frozen and hashable, so it can key what depends on
    it: a captured CUDA graph with the draw inside is one per attention bucket and
    ``Sampling`` (``backends/cuda_graph.py``). Built by the generator from its
    ``GenerationConfig``, which validates every field.
    """

    batch: int                  # B items; logits of 2B rows are [cond; uncond] and get CFG
    guidance_scale: float       # CFG scale (1 = the conditional logits as they are)
    use_sampling: bool          # False: greedy, the argmax of the guided logits
    temperature: float          # > 0; 1 leaves the logits as they are
    top_k: int                  # keep the k largest logits; 0 = off
    top_p: float                # nucleus mass; 0 = off
    sampler: str = "counter"    # one of SAMPLERS: "counter" (Gumbel-max) or "reference"

    @property
    def capturable(self) -> bool:
        """True when the draw has fixed shapes and no generator state (the counter sampler, or
        greedy decoding), so it can run inside a captured decode step."""
        return self.sampler == "counter" or not self.use_sampling

    def draw(self, logits: torch.Tensor, seeds: torch.Tensor | None = None, step=0,
             generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """The decoder's logits ``[N, K, V]`` -> one step's tokens ``[B, K]``: steps 1-5 above.

        ``N = 2B`` rows are ``[cond; uncond]`` and get classifier-free guidance. Greedy decoding
        is the argmax of the guided logits; sampling filters them and draws with ``sampler``
        (``"counter"``: ``seeds`` ``[B]`` and ``step``; ``"reference"``: ``generators``). With
        the counter sampler every operation has a fixed shape and no host synchronisation, so a
        captured decode step can run this too (``NativeBackend.step_draw``: one launch per step).
        """
        batch = self.batch
        if logits.shape[0] == 2 * batch:                              # [2B, K, V] -> [B, K, V]
            logits = classifier_free_guidance(logits[:batch], logits[batch:], self.guidance_scale)
        if not self.use_sampling:
            return logits.argmax(dim=-1)               # greedy: no randomness used
        logits = process_logits(logits, temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p)
        if self.sampler == "counter":
            if seeds is None:
                raise ValueError("the counter sampler draws from seeds: pass seeds [B] (int64).")
            return sample_counter(logits, seeds, step, top_k=self.top_k)
        return sample_tokens(logits, generators)


def draw_tokens(logits: torch.Tensor, *, batch: int, guidance_scale: float, use_sampling: bool,
                temperature: float, top_k: int, top_p: float, sampler: str = "counter",
                seeds: torch.Tensor | None = None, step=0,
                generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """:meth:`Sampling.draw` with the settings as keywords: logits ``[N, K, V]`` -> tokens
    ``[B, K]``."""
    return Sampling(batch, guidance_scale, use_sampling, temperature, top_k, top_p,
                    sampler).draw(logits, seeds=seeds, step=step, generators=generators)
