"""Train edu-tiny's codec on synthetic music, resumably, within a time budget (issue #30).

    python scripts/train_codec.py --minutes 30                 # runs/edu-tiny-codec/
    python scripts/train_codec.py --minutes 30                 # again: resumes where it stopped
    python scripts/train_codec.py --init musicgen_edu/weights/edu-tiny --run-dir runs/dec
                                              # the shipped codec's decoder alone, codes frozen

The clips come from ``musicgen_edu.train.synth`` (``--clips`` of ``--seconds`` at 16 kHz,
seed 0; held-out clips from seed 1), the codec and its loop from ``train/codec.py`` and
``train/codec_loop.py``. Every ``--eval-every`` steps the held-out SI-SNR (1..4 codebooks),
code use and mel distance go to ``log.csv``; the best checkpoint by SI-SNR is ``best.pt``;
``checkpoints/`` holds the newest full states (weights, optimiser, schedule, crop generator)
that a rerun resumes from. On a GPU the same script runs with ``--device cuda`` (not yet:
the loop is CPU-tested only). A summary table is written to ``summary.md`` at the end.

``--init FOLDER`` goes on from the codec inside a trained edu-tiny (``import_encodec``) and
trains its decoder alone: the encoder and codebooks are frozen, so the tokens, and the
language model trained on them, stay valid; every batch is decoded from all Q codebooks
(``--quantizer-dropout`` 0 unless given: the language model always makes all of them).
``run_dir/init.json`` records the output gain already folded into that decoder and the
decoder-only updates it has had (written once: a rerun resumes from the same start), and
``train_edu_tiny.py calibrate --codec RUN/best.pt`` then ships it. A rerun with a higher
``--total-steps`` stretches the cosine schedule, so the learning rate rises again (a warm
restart), rather than continuing the old decay.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from musicgen_edu.errors import ConfigError, check_int, check_range
from musicgen_edu.train.codec import CodecConfig, import_encodec
from musicgen_edu.train.codec_loop import CodecTrainer
from musicgen_edu.train.synth import synth_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/edu-tiny-codec")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-time budget")
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--total-steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam's peak rate")
    parser.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.9))
    parser.add_argument("--si-snr-weight", type=float, default=None,
                        help=f"default: --init's, else {CodecConfig.si_snr_weight}")
    parser.add_argument("--quantizer-dropout", type=float, default=None,
                        help="share of batches decoded from a random 1..Q codebooks (0-1; "
                             f"default {CodecConfig.quantizer_dropout}, with --init 0: the "
                             "language model always makes all Q)")
    parser.add_argument("--init", default=None,
                        help="an edu-tiny folder: train its codec's decoder alone, codes frozen")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    try:                                    # every number bounded before any work starts
        for flag, value, low, high in (
                ("--clips", args.clips, 1, 100_000), ("--batch-size", args.batch_size, 1, 1024),
                ("--warmup-steps", args.warmup_steps, 0, 1_000_000),
                ("--total-steps", args.total_steps, 1, 10_000_000),
                ("--eval-every", args.eval_every, 1, 1_000_000),
                ("--threads", args.threads, 0, 1024)):
            check_int(flag, value, low, high)
        check_range("--seconds", args.seconds, 1.0, 60.0, hint="(crops are 1 s)")
        check_range("--clips x --seconds", args.clips * args.seconds, 1.0, 36_000.0,
                    hint="(10 hours of audio, 2.3 GB in memory)")
        check_range("--minutes", args.minutes, 0.0, 100_000.0, low_open=True)
        check_range("--lr", args.lr, 0.0, 1.0, low_open=True)
        for beta in args.betas:
            check_range("--betas", beta, 0.0, 1.0, high_open=True)
        if args.si_snr_weight is not None:
            check_range("--si-snr-weight", args.si_snr_weight, 0.0, 100.0)
        if args.quantizer_dropout is not None:
            check_range("--quantizer-dropout", args.quantizer_dropout, 0.0, 1.0)
    except ConfigError as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    init = None
    if args.init:
        import musicgen_edu as mg

        saved = Path(args.init) / "edu_tiny.json"
        if not saved.is_file():
            parser.error(f"--init {args.init!r}: no edu_tiny.json there (an edu-tiny folder, "
                         "e.g. musicgen_edu/weights/edu-tiny)")
        info = json.loads(saved.read_text())
        config = CodecConfig.from_dict(info["codec_config"])
        net = mg.load_model(args.init, device="cpu", dtype="float32", cache=False)
        init = import_encodec(net.model.audio_encoder, config)
        started = Path(args.run_dir) / "init.json"     # what its decoder starts from: written
        if not started.is_file():                      # once, so a rerun that resumes keeps it
            started.parent.mkdir(parents=True, exist_ok=True)
            before = info["codec"].get("decoder") or {}
            started.write_text(json.dumps({"from": args.init,
                                           "output_gain": info["codec"].get("output_gain", 1.0),
                                           "decoder_updates": before.get("updates",
                                                                         before.get("step", 0))}))
    else:
        config = CodecConfig()
    if args.si_snr_weight is not None:
        config.si_snr_weight = args.si_snr_weight
    if args.quantizer_dropout is not None:
        config.quantizer_dropout = args.quantizer_dropout
    elif init is not None:                  # its language model always makes all Q codebooks
        config.quantizer_dropout = 0.0
    train = [w for w, _, _ in synth_clips(args.clips, args.seconds, config.sample_rate, seed=0)]
    held = [w for w, _, _ in synth_clips(16, 2.0, config.sample_rate, seed=1)]
    trainer = CodecTrainer(config, train, held, args.run_dir, batch_size=args.batch_size,
                           learning_rate=args.lr, betas=tuple(args.betas),
                           warmup_steps=args.warmup_steps, total_steps=args.total_steps,
                           init=init, decoder_only=init is not None)
    resumed = trainer.resume()
    print(f"{'resumed at step ' + str(trainer.step) if resumed else 'new run'}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    if init is not None and not resumed:
        start = trainer.fit(0).iloc[0]              # fit's step-0 row: where the decoder starts
        print(f"start: held-out SI-SNR {start['eval_si_snr_db']:.2f} dB", flush=True)
    deadline = time.monotonic() + args.minutes * 60
    while time.monotonic() < deadline and trainer.step < args.total_steps:
        chunk = trainer.step + args.eval_every - trainer.step % args.eval_every
        log = trainer.fit(chunk, eval_every=args.eval_every, save_every=args.eval_every)
        last = log.iloc[-1]
        print(f"step {trainer.step}: held-out SI-SNR {last['eval_si_snr_db']:.2f} dB "
              f"(best {trainer.best:.2f}), loss {last['loss']:.3f}", flush=True)
    log = pd.read_csv(Path(args.run_dir) / "log.csv")
    columns = [c for c in log.columns if c.startswith(("step", "eval_", "used_"))]
    table = log[columns].round(3).astype(object).fillna("").map(str)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in table.itertuples(index=False)]
    (Path(args.run_dir) / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
