"""The small codec (train/codec.py) and its training loop (train/codec_loop.py).

No quality claims here (that is hours of CPU: issue #30's evaluation table); what a few steps
can show: the residual VQ's rules (k-means start, EMA update, dead-code restart), the losses,
the export to a plain transformers ``EncodecModel`` that gives the same codes and audio (and
the import back), a run that resumes exactly where it stopped, and a decoder-only run that
leaves every code as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from musicgen_edu.train.codec import (
    Codec,
    CodecConfig,
    ResidualVQ,
    calibrate_output,
    export_encodec,
    import_encodec,
    multiscale_mel_loss,
    output_gain,
    si_snr_db,
)
from musicgen_edu.train.codec_loop import CodecTrainer
from musicgen_edu.train.synth import synth_clips

SR = 16000


def test_si_snr_and_mel_distance():
    clean, noise = torch.randn(2, 1, SR), torch.randn(2, 1, SR)
    assert (si_snr_db(clean, clean) > 60).all()
    noisy = clean + 0.1 * noise                                  # about 20 dB
    assert torch.allclose(si_snr_db(clean, 0.3 * noisy), si_snr_db(clean, noisy), atol=1e-3)
    assert (si_snr_db(clean, noisy) - 20).abs().max() < 0.5
    mixed = si_snr_db(clean, clean + noise)                      # equal powers: about 0 dB
    assert (mixed.abs() < 1.0).all()
    assert multiscale_mel_loss(clean, clean, SR) == 0
    assert multiscale_mel_loss(clean, clean + 0.1 * noise, SR) < multiscale_mel_loss(
        clean, clean + noise, SR)


def test_residual_vq_kmeans_ema_and_restarts():
    torch.manual_seed(0)
    vq = ResidualVQ(codebooks=2, size=16, dim=8, decay=0.5)
    x = torch.randn(512, 8)
    z = x.T[None]                                                 # [1, D, N]

    def error() -> float:
        quantised, _, _ = vq.eval()(z, 2)
        return float((quantised - z).pow(2).mean())

    before = error()
    vq.kmeans_init(x)
    assert error() < 0.6 * before                                  # k-means fits the latents
    _, codes, _ = vq(z, 2)
    assert codes.shape == (1, 2, 512) and vq.decode(codes).shape == (1, 8, 512)
    vq.train()
    old = vq.embed[0].clone()
    vq(z + 1.0, 1)                                                 # the data moved: EMA follows
    assert (vq.embed[0] - old).mean() > 0.2
    vq.counts[0, :4] = 0.0                                         # four codes never used
    assert vq.restart_dead(x, below=0.5) == 4
    assert (vq.counts[0, :4] == 1).all()
    assert all(any(torch.equal(row, r) for r in x) for row in vq.embed[0, :4])


def fitted_codec(wav: torch.Tensor) -> Codec:
    """A new codec whose codebooks k-means started on (a third of) ``wav``'s latents."""
    codec = Codec(CodecConfig())
    with torch.no_grad():
        latents = codec.latents(wav).transpose(1, 2).reshape(-1, 64)
    codec.rvq.kmeans_init(latents[::3])
    return codec.eval()


def test_export_gives_transformers_the_same_codes_and_audio():
    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(
        4, seconds=1.0, sample_rate=SR, seed=5)]))[:, None]      # [4, 1, T]
    codec = fitted_codec(wav)                                      # not fitted to every frame
    net = export_encodec(codec)
    ours = codec.encode(wav)
    theirs = net.encode(wav).audio_codes[0]                        # [B, Q, S]
    assert ours.shape == (4, 4, 50)
    assert (ours == theirs).float().mean() > 0.99                  # near-ties may differ
    with torch.no_grad():
        audio = net.decode(ours[None], [None]).audio_values
    assert torch.allclose(audio, codec.decode(ours), atol=1e-5)


def test_import_takes_back_what_export_gave():
    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(
        3, seconds=1.0, sample_rate=SR, seed=7)]))[:, None]      # [3, 1, T]
    codec = fitted_codec(wav)
    back = import_encodec(export_encodec(codec), CodecConfig())
    assert torch.equal(back.encode(wav), codec.encode(wav))
    assert torch.allclose(back.decode(codec.encode(wav)), codec.decode(codec.encode(wav)),
                          atol=1e-6)
    for (name, a), b in zip(codec.state_dict().items(), back.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_calibration_undoes_an_inverted_quiet_decode_and_keeps_the_codes():
    net = export_encodec(Codec(CodecConfig()))
    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(
        3, seconds=1.0, sample_rate=SR, seed=6)]))[:, None]      # [3, 1, T]
    before = output_gain(net, wav)
    last = [m for m in net.decoder.modules() if isinstance(m, torch.nn.Conv1d)][-1]
    with torch.no_grad():                        # what SI-SNR and mel losses cannot see
        last.parametrizations.weight.original0.mul_(-3.0)
        last.bias.mul_(-3.0)
    codes = net.encode(wav).audio_codes
    assert output_gain(net, wav) == pytest.approx(before / -3.0, rel=1e-4)
    assert calibrate_output(net, wav) == pytest.approx(before / -3.0, rel=1e-4)
    assert output_gain(net, wav) == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(net.encode(wav).audio_codes, codes)          # the encoder is untouched
    with torch.no_grad():
        last.parametrizations.weight.original0.zero_()
        last.bias.zero_()
    with pytest.raises(ValueError, match="silence"):
        calibrate_output(net, wav)


@pytest.fixture(scope="module")
def data():
    clips = [w for w, _, _ in synth_clips(6, seconds=1.0, sample_rate=SR, seed=0)]
    held = [w for w, _, _ in synth_clips(2, seconds=0.5, sample_rate=SR, seed=9)]
    return clips, held


def trainer(data, run_dir) -> CodecTrainer:
    return CodecTrainer(CodecConfig(), *data, run_dir, batch_size=2, crop_s=0.5,
                        warmup_steps=3, total_steps=20, restart_every=2, seed=0)


def test_a_run_warms_up_quantises_logs_and_resumes_exactly(data, tmp_path):
    whole = trainer(data, tmp_path / "whole")
    log = whole.fit(8, eval_every=4, save_every=4)
    assert list(log["step"]) == [4, 8] and np.isfinite(log["loss"]).all()
    assert {f"used_q{q}" for q in range(1, 5)} <= set(log.columns)
    assert (tmp_path / "whole" / "best.pt").is_file()
    assert pd.read_csv(tmp_path / "whole" / "log.csv")["step"].tolist() == [4, 8]
    first = trainer(data, tmp_path / "split")
    first.fit(4, eval_every=4, save_every=4)                       # stops after step 4 ...
    reloads: list[int] = []
    first.resume = lambda: bool(reloads.append(first.step))        # type: ignore[method-assign]
    first.fit(5, eval_every=4, save_every=4)                       # a running trainer goes on
    assert reloads == [] and first.step == 5                       # from memory, no reload
    second = trainer(data, tmp_path / "split")
    second.fit(8, eval_every=4, save_every=4)                      # ... and a new one resumes
    assert second.step == 8
    resumed_log = pd.read_csv(tmp_path / "split" / "log.csv")
    assert list(resumed_log.columns) == list(pd.read_csv(tmp_path / "whole" / "log.csv").columns)
    for (name, a), b in zip(whole.model.state_dict().items(),
                            second.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_decoder_only_run_trains_the_decoder_and_keeps_every_code(data, tmp_path):
    held = torch.from_numpy(np.stack(data[1]))[:, None]
    init = fitted_codec(torch.from_numpy(np.stack(data[0]))[:, None])
    codes = init.encode(held)
    frozen = {k: v.clone() for k, v in init.state_dict().items() if not k.startswith("decoder.")}
    decoder = {k: v.clone() for k, v in init.decoder.state_dict().items()}
    with pytest.raises(ValueError, match="pass init"):
        CodecTrainer(CodecConfig(), *data, tmp_path / "none", decoder_only=True)
    run = CodecTrainer(CodecConfig(), *data, tmp_path / "dec", batch_size=2, crop_s=0.5,
                       warmup_steps=3, total_steps=20, init=init, decoder_only=True)
    log = run.fit(4, eval_every=2, save_every=2)
    assert run.warmup == 0 and list(log["step"]) == [0, 2, 4]     # step 0: where it started
    assert np.isfinite(log["loss"][1:]).all() and np.isnan(log["loss"][0])
    assert "eval_si_snr_db_q4" in log.columns                     # quantised from the start
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in frozen.items())
    assert torch.equal(run.model.encode(held), codes)
    assert any(not torch.equal(v, run.model.decoder.state_dict()[k]) for k, v in decoder.items())
    start, later = log["eval_si_snr_db"][0], log["eval_si_snr_db"][1:].max()
    assert run.best == max(start, later)
    assert (tmp_path / "dec" / "best.pt").is_file() == (later > start)   # never worse than init
    again = CodecTrainer(CodecConfig(), *data, tmp_path / "dec", batch_size=2, crop_s=0.5,
                         total_steps=20, init=fitted_codec(held), decoder_only=True)
    again.fit(6, eval_every=2, save_every=2)                       # resumes at step 4
    assert list(pd.read_csv(tmp_path / "dec" / "log.csv")["step"]) == [0, 2, 4, 6]
    assert torch.equal(again.model.encode(held), codes)            # the checkpoint's encoder


def test_the_shipped_codec_imports_with_its_codes_and_audio():
    """``train_codec.py --init`` starts from this: edu-tiny's EncodecModel back as a Codec
    (the config from edu_tiny.json), encoding and decoding as the shipped model does."""
    import musicgen_edu as mg

    net = mg.load_model("edu-tiny", device="cpu", dtype="float32").model.audio_encoder
    saved = mg.shipped_model_info("edu-tiny")["codec_config"]
    config = CodecConfig.from_dict(saved)
    codec = import_encodec(net, config)
    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(
        2, seconds=1.0, sample_rate=SR, seed=8)]))[:, None]      # [2, 1, T]
    codes = net.encode(wav).audio_codes[0]                         # [B, Q, S]
    assert (codec.encode(wav) == codes).float().mean() > 0.99     # near-ties may differ
    with torch.no_grad():
        audio = net.decode(codes[None], [None]).audio_values
    assert torch.allclose(codec.decode(codes), audio, atol=1e-5)
