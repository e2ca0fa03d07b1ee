"""Level and channel helpers of audiocraft ``audiocraft/data/audio_utils.py``, on torch tensors:
``convert_audio_channels`` and ``normalize_audio`` with its strategies.

``normalize_audio`` picks one of five strategies (``h`` = headroom in dB, gain = 10^(-h/20))::

    clip      clamp samples to +-10^(-peak_clip_headroom_db/20)          (no gain)
    peak      scale so max |x| = 10^(-peak_clip_headroom_db/20)           (-1 dBFS by default)
    rms       scale so the RMS of the mono mix = 10^(-rms_headroom_db/20), then clip to [-1, 1]
    loudness  scale so the integrated loudness = -loudness_headroom_db LUFS (ITU-R BS.1770),
              optional tanh soft clipping, then clip to [-1, 1]
    none/''   leave as is (the audio must already be inside (-1, 1))

``normalize=False`` applies peak/rms only when they would turn the level *down* (to avoid
clipping). Loudness is measured with pyloudnorm (``musicgen_edu.audio.loudness``) where
audiocraft uses torchaudio's ``Loudness``: both implement BS.1770 (K-weighting, 400 ms gated
blocks). One deliberate difference: silence is returned unchanged by ``peak``/``rms`` where
audiocraft divides by zero.
"""

from __future__ import annotations

import sys

import torch

from ...errors import AudioError, ConfigError, check_range

__all__ = ["convert_audio_channels", "normalize_loudness", "normalize_audio", "STRATEGIES"]

STRATEGIES = ("clip", "peak", "rms", "loudness", "none", "")


def convert_audio_channels(wav: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """``[..., C, T]`` -> ``[..., channels, T]`` as audiocraft does: same count kept, to mono
    by averaging, mono repeated, or the first ``channels`` kept; fewer (not mono) is refused."""
    *shape, src, length = wav.shape
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)      # downmix all channels
    if src == 1:
        return wav.expand(*shape, channels, length)  # replicate mono
    if src >= channels:
        return wav[..., :channels, :]              # keep the first channels
    raise AudioError(f"audio has {src} channels, fewer than the {channels} requested, and is "
                     "not mono; mix it down first (wav.mean(dim=-2, keepdim=True)).")


def _clip_wav(wav: torch.Tensor, log_clipping: bool, stem_name: str | None) -> torch.Tensor:
    """Clamp to [-1, 1], telling stderr how much clipped when ``log_clipping`` (audiocraft)."""
    max_scale = wav.abs().max()
    if log_clipping and max_scale > 1:
        clamp_prob = (wav.abs() > 1).float().mean().item()
        print(f"CLIPPING {stem_name or ''} happening with proba (a bit of clipping is okay):",
              clamp_prob, "maximum scale: ", max_scale.item(), file=sys.stderr)
    return wav.clamp(-1, 1)


def normalize_loudness(wav: torch.Tensor, sample_rate: int, loudness_headroom_db: float = 14,
                       loudness_compressor: bool = False,
                       energy_floor: float = 2e-3) -> torch.Tensor:
    """Scale ``wav`` ``[C, T]`` to ``-loudness_headroom_db`` LUFS (BS.1770 integrated loudness).

    Signals whose RMS is below ``energy_floor`` are returned as they are (no gain on near
    silence, as in audiocraft); ``loudness_compressor`` soft-clips with ``tanh``.
    """
    from ...audio import loudness

    energy = wav.pow(2).mean().sqrt().item()
    if energy < energy_floor:
        return wav
    input_loudness_db = loudness(wav.double().numpy(), sample_rate)       # LUFS
    gain = 10.0 ** ((-loudness_headroom_db - input_loudness_db) / 20.0)   # dB -> amplitude
    output = gain * wav
    if loudness_compressor:
        output = torch.tanh(output)
    return output


def normalize_audio(wav: torch.Tensor, normalize: bool = True, strategy: str = "peak",
                    peak_clip_headroom_db: float = 1, rms_headroom_db: float = 18,
                    loudness_headroom_db: float = 14, loudness_compressor: bool = False,
                    log_clipping: bool = False, sample_rate: int | None = None,
                    stem_name: str | None = None) -> torch.Tensor:
    """Normalize ``wav`` ``[C, T]`` by ``strategy`` (see the module docstring).

    Args:
        wav: float audio ``[C, T]``.
        normalize: apply peak/rms always (True) or only when they lower the level (False).
        strategy: ``"clip"``, ``"peak"`` (default), ``"rms"``, ``"loudness"`` or ``"none"``.
        peak_clip_headroom_db: headroom for ``peak`` and ``clip``, dB below full scale.
        rms_headroom_db: RMS target for ``rms``, dB below full scale.
        loudness_headroom_db: loudness target for ``loudness``: ``-loudness_headroom_db`` LUFS.
        loudness_compressor: ``tanh`` soft clipping after loudness normalization.
        log_clipping: report on stderr when ``rms``/``loudness`` still clip.
        sample_rate: Hz, needed by ``loudness``.
        stem_name: a name for the clipping report.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not available; choose one of "
                          f"{list(STRATEGIES[:5])}.")
    for name, value in (("peak_clip_headroom_db", peak_clip_headroom_db),
                        ("rms_headroom_db", rms_headroom_db),
                        ("loudness_headroom_db", loudness_headroom_db)):
        check_range(name, value, None, None)
    scale_peak = 10 ** (-peak_clip_headroom_db / 20)   # dB below full scale -> amplitude
    scale_rms = 10 ** (-rms_headroom_db / 20)
    if strategy == "clip":
        return wav.clamp(-scale_peak, scale_peak)
    if strategy == "loudness":
        if sample_rate is None:
            raise ConfigError("strategy='loudness' needs sample_rate (Hz) to measure loudness.")
        wav = normalize_loudness(wav, sample_rate, loudness_headroom_db, loudness_compressor)
        return _clip_wav(wav, log_clipping, stem_name)
    if strategy == "peak":
        peak = wav.abs().max()
        if peak == 0:                                  # silence: nothing to scale
            return wav
        rescaling = scale_peak / peak
        return wav * rescaling if normalize or rescaling < 1 else wav
    if strategy == "rms":
        rms = wav.mean(dim=0).pow(2).mean().sqrt()     # RMS of the mono mix
        if rms > 0:
            rescaling = scale_rms / rms
            if normalize or rescaling < 1:
                wav = wav * rescaling
        return _clip_wav(wav, log_clipping, stem_name)
    if wav.abs().max() >= 1:                           # "none": the caller promised headroom
        raise AudioError(f"strategy={strategy!r} leaves the level as is, but the audio peaks "
                         f"at {wav.abs().max().item():.3f} >= 1; use strategy='peak' or 'clip'.")
    return wav
