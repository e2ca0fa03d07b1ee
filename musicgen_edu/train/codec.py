"""A small EnCodec trained here: transformers' architecture, our own residual VQ (issue #30).

transformers' ``EncodecModel`` gives the encoder and decoder (SEANet convolutions + an LSTM),
but keeps its codebooks as buffers with no rule to learn them. This file adds that rule, after
EnCodec (Défossez et al., 2022) and SoundStream (Zeghidour et al., 2021)::

    wav [B, 1, T] --x in_scale--> encoder --> z [B, D, S] --ResidualVQ--> codes [B, Q, S]
                                                  |                            |
                      decoder <-- quantised [B, D, S] (straight-through) <-----+
    loss = multi-scale log-mel distance + si_snr_weight * (-SI-SNR dB) + commitment

    ResidualVQ      Q codebooks of K vectors; each quantises what the ones before left over.
                    Codebooks are EMA averages of the latents assigned to them (decay 0.99),
                    started by k-means over encoder outputs after an autoencoder warm-up;
                    a code used too rarely is restarted on a random latent of the batch.
    quantizer dropout  a share of batches trains with fewer codebooks, so the first ones
                    carry the most (pitch, loudness) and 1..Q codebooks all decode.

What the issue's probe found, built in: PyTorch's default init through weight norm shrinks the
signal layer by layer (the encoder's output was nearly constant and the codebooks died), so
every convolution starts He-normal with zero bias, the input is scaled up inside the model
and the last decoder convolution scaled down; spectral losses alone never learn phase, so a
-SI-SNR term is added. :func:`export_encodec` writes the result as a plain transformers
``EncodecModel`` (codebooks in its quantizer's buffers) for a MusicGen to use.

Both losses are blind to the output's sign (SI-SNR projects onto the reference with any
sign, a mel spectrogram drops the phase), and only the mel term pulls at its level, so a
trained codec may play its input back inverted or at another level (edu-tiny's did:
``bench/README.md``). :func:`calibrate_output` measures the least-squares gain on clips and
folds it into the last convolution, as ``in_scale`` is folded in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["CodecConfig", "ResidualVQ", "Codec", "si_snr_db", "multiscale_mel_loss",
           "export_encodec", "import_encodec", "output_gain", "calibrate_output"]


@dataclass
class CodecConfig:
    """The codec's shape and its training objective."""

    sample_rate: int = 16000                 # Hz
    upsampling_ratios: tuple = (8, 5, 4, 2)  # hop = product = 320 samples: 50 frames/s
    num_filters: int = 16                    # SEANet's first channel count
    hidden_size: int = 64                    # D, the latent (and codebook vector) size
    codebooks: int = 4                       # Q, residual stages
    codebook_size: int = 256                 # K, vectors per codebook
    ema_decay: float = 0.99                  # codebook EMA (0-1)
    dead_after: float = 0.5                  # EMA use count below which a code restarts
    quantizer_dropout: float = 0.5           # share of batches with a random 1..Q codebooks
    in_scale: float = 4.0                    # the input's gain inside the model
    out_scale: float = 0.1                   # the last decoder convolution's initial gain
    si_snr_weight: float = 0.1               # weight of -SI-SNR (dB) in the loss
    commit_weight: float = 1.0               # weight of the commitment loss

    @classmethod
    def from_dict(cls, saved: dict) -> CodecConfig:
        """These settings back from a JSON dict (``edu_tiny.json``'s ``codec_config``)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in saved.items()}
        return cls(**fields)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / float(np.prod(self.upsampling_ratios))

    def encodec_config(self):
        """The transformers ``EncodecConfig`` of these settings (mono, no normalisation)."""
        from transformers import EncodecConfig

        kbps = self.codebooks * np.log2(self.codebook_size) * self.frame_rate / 1000
        return EncodecConfig(sampling_rate=self.sample_rate, audio_channels=1,
                             upsampling_ratios=list(self.upsampling_ratios),
                             codebook_size=self.codebook_size, num_filters=self.num_filters,
                             hidden_size=self.hidden_size, codebook_dim=self.hidden_size,
                             num_residual_layers=1, target_bandwidths=[float(kbps)],
                             normalize=False, use_causal_conv=False, compress=2,
                             num_lstm_layers=1)


class ResidualVQ(nn.Module):
    """Q EMA codebooks ``[Q, K, D]``, applied one after another to what is left."""

    embed: torch.Tensor                     # [Q, K, D] the codebooks (buffers, not parameters)
    counts: torch.Tensor                    # [Q, K] EMA use counts
    sums: torch.Tensor                      # [Q, K, D] EMA sums of the latents assigned

    def __init__(self, codebooks: int, size: int, dim: int, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("embed", torch.randn(codebooks, size, dim) * 0.01)
        self.register_buffer("counts", torch.ones(codebooks, size))
        self.register_buffer("sums", self.embed.clone())

    @staticmethod
    def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook row for each row of ``x`` ``[N, D]``."""
        return torch.cdist(x, codebook).argmin(dim=1)

    def forward(self, z: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
        """Quantise ``z [B, D, S]`` with the first ``n_q`` codebooks.

        Returns:
            ``(quantised [B, D, S]`` with straight-through gradients, ``codes [B, n_q, S]``,
            the commitment loss ``mean |z - sg(quantised)|^2``).
        """
        b, d, s = z.shape
        x = z.detach().transpose(1, 2).reshape(-1, d)                       # [N, D]
        residual, total, codes = x, torch.zeros_like(x), []
        for q in range(n_q):
            idx = self._nearest(residual, self.embed[q])
            if self.training:
                self._update(q, residual, idx)
            chosen = self.embed[q][idx]
            total, residual = total + chosen, residual - chosen
            codes.append(idx.view(b, s))
        quantised = total.view(b, s, d).transpose(1, 2)
        commit = F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), torch.stack(codes, dim=1), commit

    @torch.no_grad()
    def _update(self, q: int, x: torch.Tensor, idx: torch.Tensor) -> None:
        onehot = F.one_hot(idx, self.embed.shape[1]).to(x.dtype)           # [N, K]
        self.counts[q].mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.sums[q].mul_(self.decay).add_(onehot.T @ x, alpha=1 - self.decay)
        self.embed[q].copy_(self.sums[q] / self.counts[q].clamp_min(1e-5)[:, None])

    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """Start every codebook by k-means over the residuals of ``x [N, D]`` at its stage."""
        gen, residual = torch.Generator().manual_seed(seed), x.clone()
        size = self.embed.shape[1]
        for q in range(self.embed.shape[0]):
            centres = residual[torch.randint(len(residual), (size,), generator=gen)]
            for _ in range(iters):
                idx = self._nearest(residual, centres)
                counts = torch.bincount(idx, minlength=size).float()
                sums = torch.zeros_like(centres).index_add_(0, idx, residual)
                centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None],
                                      centres)
            self.embed[q], self.sums[q], self.counts[q] = centres, centres, 1.0
            residual = residual - centres[self._nearest(residual, centres)]

    @torch.no_grad()
    def restart_dead(self, x: torch.Tensor, below: float, seed: int = 0) -> int:
        """Move codes used less than ``below`` (EMA count) onto random residuals of the batch
        ``x [N, D]``; returns how many were restarted."""
        gen, residual, restarted = torch.Generator().manual_seed(seed), x, 0
        for q in range(self.embed.shape[0]):
            dead = (self.counts[q] < below).nonzero().flatten()
            if len(dead):
                pick = residual[torch.randint(len(residual), (len(dead),), generator=gen)]
                self.embed[q][dead], self.sums[q][dead], self.counts[q][dead] = pick, pick, 1.0
                restarted += len(dead)
            residual = residual - self.embed[q][self._nearest(residual, self.embed[q])]
        return restarted

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, n_q, S]`` -> the summed vectors ``[B, D, S]``."""
        vectors = torch.stack([self.embed[q][codes[:, q]] for q in range(codes.shape[1])])
        return vectors.sum(dim=0).transpose(1, 2)                          # [B, D, S]


def _he_init(module: nn.Module) -> None:
    """He-normal weights, zero biases, through transformers' weight-norm parametrisation:
    ``weight = g * v / |v|``, so v gets the He draw and g its norm (weight = v at start)."""
    convs: list[Any] = [m for m in module.modules()
                        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    for conv in convs:
        if parametrize.is_parametrized(conv, "weight"):
            v, g = conv.parametrizations.weight.original1, conv.parametrizations.weight.original0
            nn.init.kaiming_normal_(v, nonlinearity="linear")
            dims = [i for i in range(v.dim()) if i != 0]
            with torch.no_grad():
                g.copy_(v.norm(dim=dims, keepdim=True))
        else:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def _convs(module: nn.Module) -> list[nn.Conv1d]:
    """``module``'s 1-D convolutions in order: an encoder's ``[0]`` takes the waveform in,
    a decoder's ``[-1]`` gives it out (where the input and output gains are folded)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv1d)]


@torch.no_grad()
def _scale_conv_(conv: Any, gain: float, bias: bool = True) -> None:
    """Multiply ``conv``'s weight by ``gain`` in place, through the weight norm's magnitude
    ``g`` when it has one (``weight = g * v / |v|``), and its bias too unless ``bias=False``:
    the weight alone scales what comes in, weight and bias scale what goes out."""
    weight = (conv.parametrizations.weight.original0
              if parametrize.is_parametrized(conv, "weight") else conv.weight)
    weight.mul_(gain)
    if bias and conv.bias is not None:
        conv.bias.mul_(gain)


class Codec(nn.Module):
    """transformers' EnCodec encoder and decoder around a :class:`ResidualVQ`."""

    def __init__(self, config: CodecConfig, seed: int = 0):
        super().__init__()
        from transformers import EncodecModel

        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = EncodecModel(config.encodec_config())
            _he_init(net)
        self.encoder, self.decoder = net.encoder, net.decoder
        last = _convs(self.decoder)[-1]
        _scale_conv_(last, config.out_scale)
        self.rvq = ResidualVQ(config.codebooks, config.codebook_size, config.hidden_size,
                              config.ema_decay)

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T]`` -> ``[B, D, S]`` (T a multiple of the hop)."""
        return self.encoder(wav * self.config.in_scale)

    def forward(self, wav: torch.Tensor, n_q: int | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                  torch.Tensor | None]:
        """Reconstruct ``wav [B, 1, T]`` through ``n_q`` codebooks (``None``: no quantiser, the
        warm-up). Returns ``(recon [B, 1, T], commitment loss, codes or None)``."""
        z = self.latents(wav)
        if n_q is None:
            return self.decoder(z) / self.config.in_scale, z.new_zeros(()), None
        quantised, codes, commit = self.rvq(z, n_q)
        return self.decoder(quantised) / self.config.in_scale, commit, codes

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T]`` -> codes ``[B, Q, S]``."""
        return self.rvq(self.latents(wav), self.config.codebooks)[1]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, n_q, S]`` -> ``[B, 1, T]``."""
        return self.decoder(self.rvq.decode(codes)) / self.config.in_scale


def si_snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SNR in dB per item of ``[B, ..., T]`` (Le Roux et al., 2019)."""
    ref = reference.flatten(1) - reference.flatten(1).mean(1, keepdim=True)
    est = estimate.flatten(1) - estimate.flatten(1).mean(1, keepdim=True)
    target = (est * ref).sum(1, keepdim=True) / ref.pow(2).sum(1, keepdim=True).clamp_min(1e-8)
    target = target * ref
    noise = est - target
    return 10 * torch.log10(target.pow(2).sum(1).clamp_min(1e-8) / noise.pow(2).sum(1)
                            .clamp_min(1e-8))


_MEL: dict[tuple[int, int], torch.Tensor] = {}


def _mel_filters(n_fft: int, sample_rate: int) -> torch.Tensor:
    """``[n_fft // 2 + 1, mels]`` triangular mel filters (transformers.audio_utils; 64 mels, fewer
    for short windows: every filter keeps a bin), cached."""
    if (n_fft, sample_rate) not in _MEL:
        from transformers.audio_utils import mel_filter_bank

        _MEL[n_fft, sample_rate] = torch.from_numpy(mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=min(64, n_fft // 8),
            min_frequency=0.0, max_frequency=sample_rate / 2, sampling_rate=sample_rate)).float()
    return _MEL[n_fft, sample_rate]


def multiscale_mel_loss(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int,
                        windows: tuple[int, ...] = (256, 512, 1024, 2048)) -> torch.Tensor:
    """Mean over window sizes of L1 + L2 between log-mel spectrograms of ``[B, 1, T]`` clips."""
    total = reference.new_zeros(())
    for n_fft in windows:
        window = torch.hann_window(n_fft, device=reference.device)
        spec = [torch.stft(x.flatten(0, 1), n_fft, n_fft // 4, window=window,
                           return_complex=True).abs().pow(2) for x in (reference, estimate)]
        mel = _mel_filters(n_fft, sample_rate).to(reference.device)
        a, b = (torch.log(s.transpose(1, 2) @ mel + 1e-5) for s in spec)
        total = total + F.l1_loss(b, a) + F.mse_loss(b, a)
    return total / len(windows)


def export_encodec(codec: Codec):
    """The codec as a transformers ``EncodecModel``: its encoder, decoder and, in the
    quantizer's buffers, the trained codebooks (``in_scale`` folded into the first and last
    convolutions' weights, so ``EncodecModel.encode/decode`` give this codec's codes/audio)."""
    from transformers import EncodecModel

    net = EncodecModel(codec.config.encodec_config())
    net.encoder.load_state_dict(codec.encoder.state_dict())
    net.decoder.load_state_dict(codec.decoder.state_dict())
    scale = codec.config.in_scale
    with torch.no_grad():
        first = _convs(net.encoder)[0]
        last = _convs(net.decoder)[-1]
        _scale_conv_(first, scale, bias=False)           # the input, scaled up
        _scale_conv_(last, 1 / scale)                     # the output, scaled back
        for q, layer in enumerate(net.quantizer.layers):
            book: Any = layer.codebook                   # transformers' EncodecEuclideanCodebook
            book.embed.copy_(codec.rvq.embed[q])
            book.embed_avg.copy_(codec.rvq.sums[q])
            book.cluster_size.copy_(codec.rvq.counts[q])
            book.inited.fill_(1.0)
    return net.eval()


def import_encodec(net, config: CodecConfig) -> Codec:
    """The inverse of :func:`export_encodec`: a :class:`Codec` of ``config`` holding the
    ``EncodecModel`` ``net``'s encoder, decoder and codebooks (``in_scale`` taken back out of
    the first and last convolutions), e.g. a shipped edu-tiny's codec, to train further."""
    codec = Codec(config)
    codec.encoder.load_state_dict(net.encoder.state_dict())
    codec.decoder.load_state_dict(net.decoder.state_dict())
    first = _convs(codec.encoder)[0]
    last = _convs(codec.decoder)[-1]
    _scale_conv_(first, 1 / config.in_scale, bias=False)
    _scale_conv_(last, config.in_scale)
    with torch.no_grad():
        for q, layer in enumerate(net.quantizer.layers):
            codec.rvq.embed[q].copy_(layer.codebook.embed)
            codec.rvq.sums[q].copy_(layer.codebook.embed_avg)
            codec.rvq.counts[q].copy_(layer.codebook.cluster_size)
    return codec.float().eval()


@torch.no_grad()
def output_gain(net, wav: torch.Tensor) -> float:
    """The least-squares gain ``g`` that best maps the ``EncodecModel``'s decode of ``wav``
    ``[N, 1, T]`` onto ``wav`` itself (``argmin_g |wav - g * decode|^2``; 1.0 = calibrated)."""
    decoded = net.decode(net.encode(wav).audio_codes, [None]).audio_values[..., : wav.shape[-1]]
    x, y = wav.double(), decoded.double()
    return float((x * y).sum() / (y * y).sum().clamp_min(1e-20))


@torch.no_grad()
def calibrate_output(net, wav: torch.Tensor) -> float:
    """Fold :func:`output_gain` of ``wav`` ``[N, 1, T]`` into the last decoder convolution of
    the ``EncodecModel`` ``net`` (its weight-norm magnitude and bias), so its decode has the
    input's sign and level; the codes do not change. Returns the gain applied."""
    gain = output_gain(net, wav)
    if not np.isfinite(gain) or gain == 0:
        raise ValueError(f"output gain {gain}: the codec decodes these clips to silence.")
    last = _convs(net.decoder)[-1]
    _scale_conv_(last, gain)
    if abs(output_gain(net, wav) - 1) > 1e-3:          # e.g. a norm after the last convolution
        _scale_conv_(last, 1 / gain)
        raise ValueError("the decoder's last convolution does not set its output level (a "
                         "normalisation follows it?): nothing to fold the gain into.")
    return gain
