"""Look inside one decoder step: the token distribution before and after each filter.

Lecture 04 uses these helpers to show what classifier-free guidance, temperature, top-k and
top-p do to the probabilities MusicGen samples from, and how much the output varies across
seeds. Nothing here re-implements generation: the logits come from the generator's own backend
calls (``encode_text`` -> ``start`` -> ``step``, as in ``MusicGenerator._window``) and every
filter is the ``sampling.py`` function the decoding loop applies, in the loop's order::

    logits [2, K, V] = backend.step(BOS column, fresh KV cache)     rows: [cond; uncond]
    guided  = classifier_free_guidance(cond, uncond, scale)          (only when scale > 1)
    guided -> apply_temperature -> top_k_filter -> top_p_filter      (= process_logits)
    tokens  = sample_counter(guided[None], torch.tensor([seed]), step=0)   (the default sampler)

Vocabulary: logits ``[K, V]`` (codebooks, vocabulary) for one item, ``[B, K, S]`` tokens.
Entropies are in **nats** (natural log; divide by ``ln 2`` for bits): a uniform distribution
over V tokens has entropy ``ln V``, a single certain token has 0.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import torch

from .errors import ConfigError
from .generation import GenerationConfig
from .generator import MusicGenerator
from .models import MusicGenModel
from .sampling import apply_temperature, classifier_free_guidance, top_k_filter, top_p_filter

__all__ = ["first_step_logits", "step_logits", "entropy", "filter_steps", "token_diversity",
           "plot_distribution", "plot_filter_steps", "STAGES"]

STAGES = ("logits", "cfg", "temperature", "top_k", "top_p")  # filter_steps' keys, in loop order
_LABELS = {"logits": "conditional logits", "cfg": "after CFG", "temperature": "after temperature",
           "top_k": "after top-k", "top_p": "after top-p"}


def _as_generator(generator_or_model) -> MusicGenerator:
    if isinstance(generator_or_model, MusicGenerator):
        return generator_or_model
    if isinstance(generator_or_model, MusicGenModel):
        return MusicGenerator(generator_or_model, progress=False)
    raise ConfigError(f"expected a MusicGenerator or a loaded MusicGenModel, got "
                      f"{type(generator_or_model).__name__}; use mg.MusicGenerator('debug').")


def step_logits(generator_or_model, prompt: str | None, grid: torch.Tensor,
                negative_prompt: str | None = None) -> dict[str, torch.Tensor]:
    """Logits of the decoder step that follows the delayed-grid columns ``grid``.

    Args:
        generator_or_model: a :class:`MusicGenerator` (its backend is used) or a loaded model.
        prompt: the text prompt (``None`` = unconditional row).
        grid: the first ``c`` columns of a delayed grid, ``[K, c]`` or ``[1, K, c]``, starting
            with the BOS column; e.g. ``mg.delay_pattern(out.tokens[:1], special)[..., :c]``
            gives the logits the loop saw when it filled column ``c``.
        negative_prompt: the CFG row's text (``None`` = the null condition, as in ``generate``).

    Returns:
        ``{"cond": [K, V], "uncond": [K, V]}`` float32 logits on the model's device. Feeding
        ``c > 1`` columns at once (a prefill) matches the loop's one-by-one steps up to float
        rounding; for ``c = 1`` it is the very same computation.
    """
    gen = _as_generator(generator_or_model)
    model = gen.model
    grid = torch.as_tensor(grid, dtype=torch.long)
    grid = grid[None] if grid.dim() == 2 else grid                      # [1, K, c]
    if grid.dim() != 3 or grid.shape[:2] != (1, model.num_codebooks) or grid.shape[-1] == 0:
        raise ConfigError(f"grid must be [K, c] or [1, K, c] with K={model.num_codebooks} and "
                          f"c >= 1 columns, got shape {list(grid.shape)}.")
    if (grid < 0).any() or (grid > model.special_token).any():
        raise ConfigError(f"grid holds ids outside [0, {model.special_token}]; feed only known "
                          "columns (no UNKNOWN holes).")
    cond = gen.backend.encode_text([prompt, negative_prompt])           # rows [cond; uncond]
    state = gen.backend.start(cond)                                     # empty KV cache
    logits = gen.backend.step(grid.to(model.device).repeat(2, 1, 1), state)  # [2, K, V]
    return {"cond": logits[0], "uncond": logits[1]}


def first_step_logits(generator_or_model, prompt: str | None,
                      negative_prompt: str | None = None) -> dict[str, torch.Tensor]:
    """The logits of the first decoder step, exactly as ``MusicGenerator.generate`` computes them.

    The loop's first step reads the BOS column ``[[S], [S], ..., [S]]`` (S = special token) for
    the conditional row and the unconditional (or negative-prompt) row. Only codebook 0 is kept
    from this step: the delay pattern fills the other codebooks' first column with S.

    Returns:
        ``{"cond": [K, V], "uncond": [K, V]}`` float32 logits on the model's device.
    """
    gen = _as_generator(generator_or_model)
    bos = torch.full((1, gen.model.num_codebooks, 1), gen.model.special_token)  # [1, K, 1]
    return step_logits(gen, prompt, bos, negative_prompt)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits)`` over the last dimension; ``-inf`` entries count 0.

    Example: ``entropy(torch.zeros(2048))`` is ``ln 2048 = 7.62`` nats (11 bits).
    """
    logits = torch.as_tensor(logits).float()
    log_p = torch.log_softmax(logits, dim=-1)
    terms = torch.where(torch.isfinite(log_p), log_p.exp() * log_p, torch.zeros_like(log_p))
    return -terms.sum(dim=-1)


def filter_steps(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                 guidance_scale: float = 1.0, uncond: torch.Tensor | None = None) -> OrderedDict:
    """The distribution after each stage of the sampling pipeline, in the decoding loop's order.

    Args:
        logits: conditional logits ``[..., V]``, or the dict from :func:`first_step_logits`
            (its ``uncond`` is used when ``uncond`` is not given).
        temperature: as in :class:`GenerationConfig` (validated).
        top_k: as in :class:`GenerationConfig` (validated).
        top_p: as in :class:`GenerationConfig` (validated).
        guidance_scale: as in :class:`GenerationConfig` (validated).
        uncond: unconditional logits, needed when ``guidance_scale > 1``.

    Returns:
        ``OrderedDict`` with keys :data:`STAGES` ``("logits", "cfg", "temperature", "top_k",
        "top_p")``: float32 logits after each stage (a disabled stage repeats the previous one).
        The last entry equals ``process_logits(classifier_free_guidance(...), ...)``: what
        the sampler receives in ``generate``.
    """
    if isinstance(logits, dict):
        uncond = logits["uncond"] if uncond is None else uncond
        logits = logits["cond"]
    GenerationConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                     guidance_scale=guidance_scale)                    # range checks
    steps = OrderedDict(logits=logits.float())
    if guidance_scale > 1:                                              # as the loop: only if > 1
        if uncond is None:
            raise ConfigError(f"guidance_scale={guidance_scale} needs the unconditional logits; "
                              "pass uncond=... or the dict from first_step_logits.")
        logits = classifier_free_guidance(logits, uncond, guidance_scale)
    steps["cfg"] = logits = logits.float()                              # process_logits' cast
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    steps["temperature"] = logits
    steps["top_k"] = logits = top_k_filter(logits, top_k)
    steps["top_p"] = top_p_filter(logits, top_p)
    return steps


def token_diversity(tokens_list) -> dict:
    """How different clips generated with different seeds are.

    Args:
        tokens_list: ``[N, K, S]`` tokens (e.g. ``out.tokens`` of a call with N seeds) or a list
            of N tensors ``[K, S]`` / ``[1, K, S]`` of the same shape.

    Returns:
        ``pairwise_difference``: mean over pairs of runs of the fraction of positions whose
        tokens differ (0 = all runs identical, as greedy decoding gives); ``distinct_per_codebook``:
        K counts of distinct tokens over all runs; ``distinct_per_run``: distinct tokens per
        codebook within one run, averaged (low = repetitive); ``runs``: N.
    """
    if isinstance(tokens_list, torch.Tensor) and tokens_list.dim() == 3:
        runs = tokens_list
    else:
        items = [torch.as_tensor(t) for t in tokens_list]
        items = [t[0] if t.dim() == 3 and t.shape[0] == 1 else t for t in items]
        if not items or any(t.dim() != 2 or t.shape != items[0].shape for t in items):
            raise ConfigError("token_diversity needs at least one run, all [K, S] of one shape; "
                              f"got shapes {[list(t.shape) for t in items]}.")
        runs = torch.stack(items)                                       # [N, K, S]
    runs = runs.cpu()
    pairs = [(runs[i] != runs[j]).float().mean().item()
             for i, j in itertools.combinations(range(len(runs)), 2)]
    return dict(pairwise_difference=sum(pairs) / len(pairs) if pairs else 0.0,
                distinct_per_codebook=[len(runs[:, k].unique()) for k in range(runs.shape[1])],
                distinct_per_run=sum(len(row.unique()) for run in runs for row in run)
                / (runs.shape[0] * runs.shape[1]),
                runs=len(runs))


def plot_distribution(logits, ax=None, top: int = 50, title: str | None = None):
    """Bar chart of the ``top`` largest probabilities of one codebook's logits ``[V]``.

    The title shows the entropy (nats) and how many tokens are still allowed (finite logits);
    a filtered token has probability 0. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    logits = torch.as_tensor(logits).detach().float().cpu()
    if logits.dim() != 1:
        raise ConfigError(f"plot_distribution takes one codebook's logits [V], got shape "
                          f"{list(logits.shape)}; pick one, e.g. logits[0].")
    probs, ids = logits.softmax(-1).sort(descending=True)
    top = max(1, min(int(top), len(probs)))
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3))[1]
    ax.bar(range(top), probs[:top].numpy(), width=0.9)
    ax.set_xlabel(f"rank (top {top} of {len(probs)} tokens)")
    ax.set_ylabel("probability")
    kept = int(torch.isfinite(logits).sum())
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}H = {entropy(logits).item():.2f} nats, {kept} kept", fontsize=10)
    ax.annotate(f"top token {ids[0].item()}: p = {probs[0].item():.3f}", (0.98, 0.95),
                xycoords="axes fraction", ha="right", va="top", fontsize=8)
    return ax


def plot_filter_steps(steps: dict, codebook: int = 0, top: int = 50, axes=None):
    """One :func:`plot_distribution` panel per stage of :func:`filter_steps` (one codebook).

    Returns the list of Axes, one per stage, left to right in the loop's order.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.2), sharey=True,
                               constrained_layout=True)
    axes = list(getattr(axes, "flat", axes))
    for ax, (name, logits) in zip(axes, steps.items()):
        plot_distribution(logits[codebook] if logits.dim() > 1 else logits, ax=ax, top=top,
                          title=_LABELS.get(name, name))
    return axes
