"""Fréchet Audio Distance, embedding backends, and diversity across seeds.

FAD (Kilgour et al. 2019, "Fréchet Audio Distance: A Metric for Evaluating Music Enhancement
Algorithms") compares two *sets* of clips, not one clip with another: embed every clip (or
every frame), fit a Gaussian to each set, and measure the Fréchet (2-Wasserstein) distance
between the Gaussians::

    mu_a, sigma_a = mean and covariance of embeddings A [N, D]
    mu_b, sigma_b = mean and covariance of embeddings B [M, D]
    FAD = |mu_a - mu_b|^2 + tr(sigma_a) + tr(sigma_b) - 2 tr( sqrtm(sigma_a @ sigma_b) )

0 means the two sets have the same mean and covariance; lower = closer. The matrix square root
follows the reference implementations, google-research ``frechet_audio_distance/fad_utils.py``
and pytorch-fid ``fid_score.py::calculate_frechet_distance``: ``scipy.linalg.sqrtm``; if the
result is not finite or has more than a rounding-noise imaginary part (near-singular
covariances), retry with ``eps * I`` added to both covariances (pytorch-fid does this for
non-finite results); drop an imaginary part that is only rounding noise.

Embeddings (what "sounds alike" means depends entirely on them):

* :func:`~musicgen_edu.metrics.clap.clap_embeddings` (CLAP, one per clip);
* :func:`vggish_embeddings` (VGGish, one per 0.96 s frame, as in the FAD paper; needs the
  optional ``torchvggish`` package and its weights, downloaded once);
* :func:`encodec_embeddings` (offline fallback): MusicGen's own EnCodec encoder output
  averaged over time (or every frame). NOT comparable to any published FAD value, and with the
  "debug" model's random EnCodec it only says which sets of noise differ.

FAD needs many samples: a covariance of D dimensions from N < D + 1 embeddings is singular, and
FAD is biased upwards for small N (Binkowski et al. 2018; Gui et al. 2024 on FAD). Use
``per_frame=True`` for few clips, and compare FADs only at the same N and embedding.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import torch

from ..errors import ConfigError
from .descriptors import as_clips

__all__ = ["embedding_stats", "frechet_distance", "fad", "diversity", "encodec_embeddings",
           "vggish_embeddings"]


def _embeddings(emb, name: str = "embeddings", min_rows: int = 1) -> np.ndarray:
    arr = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    if arr.ndim != 2 or arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ConfigError(f"{name} must be a 2-D array [N, D] with N >= {min_rows} rows, got "
                          f"shape {tuple(arr.shape)}.")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ConfigError(f"{name} must hold finite numbers.")
    return arr.astype(np.float64)


def embedding_stats(emb) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, rows are samples) of ``emb [N, D]``."""
    arr = _embeddings(emb, min_rows=2)
    return arr.mean(axis=0), np.atleast_2d(np.cov(arr, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Worked example (diagonal covariances, where ``sqrtm`` is the element-wise square root)::

        d = |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i))
        mu1 = [0, 0], s1 = [1, 4];  mu2 = [3, 4], s2 = [4, 1]
        d = 25 + (1 + 4 - 4) + (4 + 1 - 4) = 27

    Args:
        mu1: mean ``[D]`` of the first Gaussian.
        sigma1: its covariance ``[D, D]`` (symmetric, positive semi-definite).
        mu2: mean ``[D]`` of the second Gaussian.
        sigma2: its covariance ``[D, D]``.
        eps: added to the diagonals when the plain square root is not finite.

    Returns:
        The distance (>= 0; rounding below 0 is clipped to 0).

    Raises:
        ConfigError: shapes disagree, or the square root keeps a large imaginary part (the
            covariances are too degenerate: use more embeddings than dimensions).
    """
    from scipy import linalg  # lazy

    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ConfigError(f"shapes disagree: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 "
                          f"{sigma1.shape}, sigma2 {sigma2.shape}; expected [D] and [D, D].")

    def sqrtm(a):
        with warnings.catch_warnings():  # "matrix is singular" is handled below
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return linalg.sqrtm(a)

    def usable(root) -> bool:  # finite, and any imaginary part is rounding noise
        if not np.isfinite(root).all():
            return False
        scale = max(1.0, float(np.abs(np.diagonal(root)).max()))
        return np.allclose(np.diagonal(root).imag, 0, atol=1e-3 * scale)

    diff = mu1 - mu2
    covmean = sqrtm(sigma1 @ sigma2)                               # sqrt(sigma1 sigma2)
    if not usable(covmean):                                        # near-singular: regularise
        offset = np.eye(d) * eps
        covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not usable(covmean):
        raise ConfigError(
            f"sqrtm(sigma1 @ sigma2) is not usable (largest imaginary part "
            f"{np.abs(np.imag(covmean)).max():.3g}): the covariances are too degenerate. Use "
            f"more embeddings than dimensions (here D = {d}; e.g. per_frame=True) or a larger "
            "eps.")
    covmean = covmean.real                                         # drop rounding noise
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return max(float(value), 0.0)


def fad(emb_a, emb_b, eps: float = 1e-6) -> float:
    """Fréchet Audio Distance between two embedding sets ``emb_a [N, D]`` and ``emb_b [M, D]``.

    Each set needs at least 2 rows; ``fad(x, x) == 0``; ``fad(a, b) == fad(b, a)`` up to
    rounding. Compare values only for the same embedding model and similar N, M.
    """
    a, b = _embeddings(emb_a, "emb_a", 2), _embeddings(emb_b, "emb_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"emb_a has D={a.shape[1]} dimensions and emb_b D={b.shape[1]}; "
                          "embed both sets with the same model.")
    return frechet_distance(*embedding_stats(a), *embedding_stats(b), eps=eps)


def diversity(embeddings, metric: str = "cosine") -> float:
    """Mean pairwise distance between the rows of ``embeddings [N, D]`` (N >= 2).

    ``metric="cosine"`` (default): ``1 - cos(angle)``, in [0, 2], ignores loudness-like
    scale; ``"euclidean"``: straight-line distance, in the embedding's units. 0 = all clips
    embed identically (e.g. greedy decoding with every seed); higher = more varied.
    """
    arr = _embeddings(embeddings, min_rows=2)
    if metric == "cosine":
        unit = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        dist = lambda i, j: 1.0 - float(unit[i] @ unit[j])  # noqa: E731
    elif metric == "euclidean":
        dist = lambda i, j: float(np.linalg.norm(arr[i] - arr[j]))  # noqa: E731
    else:
        raise ConfigError(f"metric={metric!r}; use 'cosine' or 'euclidean'.")
    pairs = list(itertools.combinations(range(len(arr)), 2))
    return sum(dist(i, j) for i, j in pairs) / len(pairs)


# ------------------------------------------------------------------ embedding backends

@torch.no_grad()
def encodec_embeddings(model, wavs, sample_rate: int | None = None,
                       per_frame: bool = False) -> np.ndarray:
    """EnCodec encoder latents of MusicGen's own codec, as an offline FAD embedding.

    Steps: mix each clip to mono, resample to the model's rate (32 kHz), run
    ``model.model.audio_encoder.encoder`` (the convolutional encoder before quantisation) to
    get ``[1, D, S]`` latents at 50 frames/s, then average over time (``[D]`` per clip) or
    keep every frame. NOT comparable to published FAD values (those use VGGish or CLAP).

    Args:
        model: a loaded ``MusicGenModel`` or a ``MusicGenerator``.
        wavs: a ``Generation``, ``[B, C, T]``, ``[C, T]``, ``[T]`` or a list of clips.
        sample_rate: Hz (leave out for a Generation).
        per_frame: return every frame ``[sum of S, D]`` instead of one row per clip ``[N, D]``.
    """
    from ..audio import resample

    mg_model = getattr(model, "model", None) if hasattr(model, "backend") else model
    if not hasattr(getattr(mg_model, "model", None), "audio_encoder"):
        raise ConfigError(f"expected a loaded MusicGenModel or a MusicGenerator, got "
                          f"{type(model).__name__}; use mg.load_model('debug').")
    encoder = mg_model.model.audio_encoder.encoder
    clips, sample_rate, _ = as_clips(wavs, sample_rate)
    rows = []
    for clip in clips:
        mono = resample(clip.mean(axis=0), sample_rate, mg_model.sample_rate)   # [T]
        x = torch.from_numpy(mono)[None, None].to(mg_model.device, torch.float32)  # [1, 1, T]
        latents = encoder(x)[0].T.cpu().double()                               # [S, D]
        rows.append(latents if per_frame else latents.mean(dim=0, keepdim=True))
    return torch.cat(rows).numpy()


@torch.no_grad()
def vggish_embeddings(wavs, sample_rate: int | None = None) -> np.ndarray:
    """VGGish embeddings ``[frames, 128]``, one per 0.96 s of each clip (the FAD paper's set).

    Needs ``pip install torchvggish`` and downloads its weights once. The raw 128-D embedding
    layer is used (no PCA / 8-bit quantisation), as in google-research's FAD.

    Raises:
        ModelLoadError: torchvggish is not installed.
    """
    from ..audio import resample
    from ..errors import ModelLoadError

    try:
        import torchvggish
        from torchvggish import vggish_input
    except ImportError:
        raise ModelLoadError("vggish_embeddings needs the optional package torchvggish "
                             "(pip install torchvggish; weights download once). Offline, use "
                             "encodec_embeddings or clap_embeddings instead.") from None
    net = torchvggish.vggish(postprocess=False).eval()
    clips, sample_rate, _ = as_clips(wavs, sample_rate)
    rows = []
    for clip in clips:
        mono = resample(clip.mean(axis=0), sample_rate, 16000)                # VGGish: 16 kHz
        examples = torch.as_tensor(vggish_input.waveform_to_examples(mono, 16000)).float()
        examples = examples[:, None] if examples.dim() == 3 else examples      # [n, 1, 96, 64]
        if len(examples):
            rows.append(net(examples).double())                               # [n, 128]
    if not rows:
        raise ConfigError("every clip is shorter than one VGGish frame (0.96 s).")
    return torch.cat(rows).numpy()
