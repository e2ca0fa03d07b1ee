"""Train edu-tiny's language model on its codec's tokens, grade it, and ship it (issue #30).

    python scripts/train_codec.py --minutes 60                      # stage 1: the codec
    python scripts/train_edu_tiny.py lm --steps 3000                # stages 2-3 (resumable:
    python scripts/train_edu_tiny.py lm --steps 4000                #   more steps continue)
    python scripts/train_edu_tiny.py ship                           # -> musicgen_edu/weights
    python scripts/train_edu_tiny.py grade --model musicgen_edu/weights/edu-tiny   # the table
    python scripts/train_edu_tiny.py ship                           # again, with its grade
    python scripts/train_edu_tiny.py calibrate                      # weights shipped uncalibrated
    python scripts/train_edu_tiny.py calibrate --codec runs/dec/best.pt   # a codec decoder
                                                    # trained on (train_codec.py --init)

``lm`` builds the model around the codec's best checkpoint (``--codec``), encodes ``--clips``
synth clips of ``--seconds`` (seed 0) once into ``run_dir/tokens.pt`` and trains the decoder
with ``train.Trainer`` (checkpoints, log.csv, samples in ``run_dir/lm``; a rerun resumes);
``lm --init FOLDER`` goes on from a trained edu-tiny instead of new weights (that run's
updates count toward the shipped total; its codec is the data's unless ``--codec`` is given).
``lm --contrast-weight W`` adds train/contrast.py's caption contrast to every update: fresh
synth clips whose tokens must be likelier under their caption than with "major" and "minor"
swapped, plus their own cross-entropy (``ContrastTrainer``; the settings go into
``lm/train_config.json``); the clips of update n are synth seed ``--contrast-seed`` + n, so a
run going on from a contrast run (``--init``) passes a seed whose clips that run did not see.
``--device`` picks where ``lm`` trains (``auto``: a GPU if any).
``grade`` judges ``--per-attribute`` generations per attribute (train/grade.py) next to the
same judges on the synth itself and on its codec round trip, and the codec's held-out SI-SNR,
SNR, mel distance and code use, and whether the model *holds* each attribute: the same prompts
continued from the synth's own first ``--prompt-seconds`` (train/grade.py
``continuation_generate``), judged on what it added; it writes ``run_dir/grade.md`` and
``grade.json``. ``ship``
folds the codec's output gain into its decoder (its losses ignore the output's sign, and only
the mel term pulls at its level: train/codec.py ``calibrate_output``) and saves the model in
float16 with its configs and the grade into the package. ``calibrate`` does that fold, and a
new grade, for weights shipped before it existed; ``calibrate --codec`` first swaps in the
decoder of a ``train_codec.py --init`` run (the shipped codec's decoder trained on with its
encoder and codebooks frozen: the tokens, and so the language model, do not change).
``regrade`` grades the shipped weights again (after the grade gained a table, say) and ships
that grade beside them, the weights unchanged.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from musicgen_edu.errors import ConfigError, check_int, check_range
from musicgen_edu.models import resolve_device
from musicgen_edu.train.codec import (
    Codec,
    CodecConfig,
    calibrate_output,
    multiscale_mel_loss,
    si_snr_db,
)
from musicgen_edu.train.contrast import MAX_HEAD_SECONDS, ContrastConfig
from musicgen_edu.train.edu_tiny import (
    EduTinyConfig,
    build_edu_tiny,
    ship_model,
    synth_token_dataset,
)

SHIPPED = Path(__file__).resolve().parent.parent / "musicgen_edu" / "weights" / "edu-tiny"


def load_codec(path: str) -> tuple[Codec, dict]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    codec = Codec(CodecConfig.from_dict(saved["config"]))
    codec.load_state_dict(saved["model"])
    return codec.eval(), {"step": saved["step"], **saved.get("eval", {})}


def decoder_updates(folder: str) -> int:
    """How many decoder updates made the edu-tiny in ``folder``: a shipped folder says so in
    edu_tiny.json; a run's ``lm/model`` folder in its run's result.json (+ lm_init.json)."""
    shipped = Path(folder) / "edu_tiny.json"
    if shipped.is_file():
        return json.loads(shipped.read_text())["decoder_updates"]
    run = Path(folder).parent
    earlier = run.parent / "lm_init.json"                # that run's own start, if any
    return json.loads((run / "result.json").read_text())["steps"] + (
        json.loads(earlier.read_text())["updates"] if earlier.is_file() else 0)


def init_codec(folder: str) -> dict:
    """The codec record (checkpoint, config, step, evaluation) of the edu-tiny in ``folder``:
    a shipped folder's edu_tiny.json, or a run's codec.json beside its ``lm/model``."""
    shipped = Path(folder) / "edu_tiny.json"
    if shipped.is_file():
        info = json.loads(shipped.read_text())
        return {**info["codec"], "config": info["codec_config"]}
    return json.loads((Path(folder).parent.parent / "codec.json").read_text())


def check_same_codec(model, codec: Codec, model_path: str, codec_path: str) -> None:
    """Refuse a model (``model_path``) whose codec is not ``codec_path``'s: its tokens would
    not be the data's.
    Only what makes the tokens is compared (encoder, codebooks): ``calibrate`` changes the
    decoder's last layer of a shipped model."""
    from musicgen_edu.train.codec import export_encodec

    tokens_only = lambda state: {k: v for k, v in state.items()  # noqa: E731
                                 if k.startswith(("encoder.", "quantizer."))}
    want = tokens_only(export_encodec(codec).state_dict())
    have = tokens_only(model.model.audio_encoder.state_dict())
    if want.keys() != have.keys() or not all(
            torch.allclose(want[k].float(), have[k].float(), rtol=1e-2, atol=1e-3) for k in want):
        raise SystemExit(f"{model_path} was not built around {codec_path}: pass that model's "
                         "codec checkpoint as --codec.")


def stage_lm(args) -> None:
    import musicgen_edu as mg
    from musicgen_edu.train import TrainConfig, Trainer
    from musicgen_edu.train.contrast import ContrastTrainer
    from musicgen_edu.train.synth import synth_specs

    run = Path(args.run_dir)
    device = resolve_device(args.device)
    contrast = ContrastConfig(weight=args.contrast_weight, margin=args.contrast_margin,
                              heads=args.contrast_heads, seconds=args.contrast_seconds,
                              spans=args.contrast_spans, seed=args.contrast_seed)
    if args.init:              # go on from a trained edu-tiny (and its codec, or --codec's)
        model = mg.load_model(args.init, device=device, dtype="float32", cache=False)
        model.name = "edu-tiny"
        if args.codec:
            codec, codec_eval = load_codec(args.codec)
            check_same_codec(model, codec, args.init, args.codec)
            codec_record = {"checkpoint": args.codec, "config": asdict(codec.config),
                            **codec_eval}          # the init model's decoder, as calibrated:
            codec_record["output_gain"] = init_codec(args.init).get("output_gain", 1.0)
        else:
            codec_record = init_codec(args.init)
            codec_eval = codec_record
    elif args.codec:
        codec, codec_eval = load_codec(args.codec)
        codec_record = {"checkpoint": args.codec, "config": asdict(codec.config), **codec_eval}
        model = build_edu_tiny(codec, EduTinyConfig())             # float32, on the CPU
        model = replace(model, model=model.model.to(device), device=device)
    else:
        raise SystemExit("lm needs --codec (a codec checkpoint) or --init (a trained edu-tiny).")
    check_spans(contrast, model.frame_rate)               # before the run folder exists
    if args.init:
        run.mkdir(parents=True, exist_ok=True)
        (run / "lm_init.json").write_text(json.dumps({"from": args.init,
                                                      "updates": decoder_updates(args.init)}))
    tokens = run / "tokens.pt"
    if tokens.is_file():
        data = torch.load(tokens, weights_only=False)
        saved = (data["codec_step"], len(data["dataset"]), data["dataset"].frames)
        wanted = (codec_eval["step"], args.clips, int(np.ceil(args.seconds * model.frame_rate)))
        if saved != wanted:
            raise SystemExit(f"{tokens} holds (codec step, clips, frames) = {saved}, not "
                             f"{wanted}: use a new --run-dir.")
        dataset = data["dataset"]
        # the tokens depend on the audio only: captions follow synth.py's current wording
        dataset.captions = [s.caption() for s in synth_specs(len(dataset), seed=0)]
    else:
        run.mkdir(parents=True, exist_ok=True)
        dataset = synth_token_dataset(model, args.clips, args.seconds, seed=0)
        torch.save({"dataset": dataset, "codec_step": codec_eval["step"]}, tokens)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         warmup_steps=min(args.warmup, args.steps), weight_decay=0.01,
                         caption_dropout=0.3, checkpoint_every=args.checkpoint_every,
                         keep_checkpoints=2, precision=args.precision, window=args.seconds,
                         sample_seconds=4.0, sample_captions=(
                             "fast piano chords in C major, high register",
                             "slow organ melody in A minor, low register, with drums"))
    lm_dir = run / "lm"
    resume = (lm_dir / "train_config.json").is_file()
    if args.contrast_weight > 0:          # the caption contrast on fresh heads (contrast.py)
        trainer: Trainer = ContrastTrainer(model, dataset, lm_dir, config, contrast=contrast,
                                           resume=resume)
    else:
        trainer = Trainer(model, dataset, lm_dir, config, resume=resume)
    print(f"{len(dataset)} windows of {dataset.frames} frames; "
          f"{'resumed at ' + str(trainer.step) if resume else 'new run'}", flush=True)
    trainer.fit()
    (run / "codec.json").write_text(json.dumps(codec_record, indent=2, default=float))


def check_spans(contrast: ContrastConfig, frame_rate: float) -> None:
    """Refuse more ``--contrast-spans`` than a head has frames at the model's frame rate,
    before the run folder or the clips' encoding (minutes) exist."""
    try:
        contrast.check_frames(frame_rate)
    except ConfigError as err:
        raise SystemExit(f"--contrast-spans / --contrast-seconds: {err}") from None


@torch.no_grad()
def codec_report(model, seconds: float = 4.0, clips: int = 32) -> dict:
    """Held-out SI-SNR and mel distance of the exported codec (synth seed 1), codes used."""
    from musicgen_edu.train.synth import synth_clips

    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(clips, seconds,
                                                                  model.sample_rate, seed=1)]))
    codec = model.model.audio_encoder
    hop = int(np.prod(codec.config.upsampling_ratios))
    wav = wav[:, None, : wav.shape[-1] // hop * hop]                            # [N, 1, T]
    codes = codec.encode(wav).audio_codes                                        # [1, N, K, S]
    recon = codec.decode(codes, [None]).audio_values[..., : wav.shape[-1]]
    used = [codes[0, :, q].unique().numel() / codec.config.codebook_size
            for q in range(codes.shape[2])]
    snr = 10 * torch.log10(wav.pow(2).sum((1, 2)) / (wav - recon).pow(2).sum((1, 2)))
    return {"clips": clips, "seconds": seconds,
            "si_snr_db": si_snr_db(wav, recon).mean().item(), "snr_db": snr.mean().item(),
            "mel_distance": multiscale_mel_loss(wav, recon, model.sample_rate).item(),
            "codes_used_min": min(used), "codes_used": used}


def calibrate(model) -> float:
    """Fold the codec's output gain, measured on 64 synth clips of 4 s of seed 0 (its training
    clips), into the model's decoder (train/codec.py ``calibrate_output``); returns the gain."""
    from musicgen_edu.train.synth import synth_clips

    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(64, 4.0, model.sample_rate,
                                                                  seed=0)]))[:, None]
    return calibrate_output(model.model.audio_encoder, wav.to(model.device))


def stage_grade(args, name: str | None = None) -> None:
    import pandas as pd

    import musicgen_edu as mg
    from musicgen_edu.train.grade import (
        Judges,
        accuracy_table,
        caption_reading,
        codec_generate,
        continuation_generate,
        grade,
        memorised,
        model_generate,
        synth_generate,
        trimmed,
    )

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = str(args.model or run / "lm" / "model")
    graded = name or path                                   # what grade.json calls it
    model = mg.load_model(path, device="cpu", dtype="float32", cache=False)
    sr, n = model.sample_rate, args.per_attribute
    judges = Judges.fit(sr)
    generator = mg.MusicGenerator(model, progress=False)
    settings = dict(guidance_scale=args.guidance, temperature=args.temperature, top_k=args.top_k)

    def judged(makers: dict) -> pd.DataFrame:
        """Each generator's accuracy table, printed as it comes, in one frame (column clips)."""
        tables = []
        for name, make in makers.items():
            one = accuracy_table(grade(make, judges, sr, per_attribute=n, seconds=args.seconds,
                                       seed=args.seed))
            print(name, one.to_string(index=False), sep="\n", flush=True)
            tables.append(one.assign(clips=name))
        return pd.concat(tables)

    table = judged({"edu-tiny": model_generate(generator, **settings),
                    "synth (ceiling)": synth_generate(sr),
                    "synth through the codec": codec_generate(model)})
    held_table = judged({                # does it hold what the synth's first seconds set?
        "edu-tiny": continuation_generate(generator, args.prompt_seconds, **settings),
        "synth (ceiling)": trimmed(synth_generate(sr), args.prompt_seconds, sr)})
    codec = codec_report(model)
    reading = caption_reading(model)
    seen = memorised(model).set_index("clips")["loss"]
    lines = [f"Model: {graded}. Generation: {settings}, {args.seconds} s clips, "
             f"{n} per attribute, seed {args.seed}.", "",
             "| clips | attribute | n | accuracy | chance | threshold | passed |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.clips} | {r.attribute} | {r.n} | {r.accuracy:.0%} | {r.chance:.0%} | "
              f"{r.threshold:.0%} | {'yes' if r.passed else 'no'} |"
              for r in table.itertuples()]
    lines += ["", f"Held: the same prompts, the model continuing the synth's own first "
              f"{args.prompt_seconds} s of each clip (the right key, tempo, register and "
              "instrument); judged on what it added, against the synth's own rest:", "",
              "| clips | attribute | n | accuracy | chance |", "|---|---|---|---|---|"]
    lines += [f"| {r.clips} | {r.attribute} | {r.n} | {r.accuracy:.0%} | {r.chance:.0%} |"
              for r in held_table.itertuples()]
    lines += ["", f"Codec, {codec['clips']} held-out clips of {codec['seconds']} s (synth "
              f"seed 1): SI-SNR {codec['si_snr_db']:.2f} dB (target >= 5), waveform SNR "
              f"{codec['snr_db']:.2f} dB, multi-scale mel "
              f"distance {codec['mel_distance']:.2f}, codes used per codebook "
              + ", ".join(f"{u:.0%}" for u in codec["codes_used"]) + " (target >= 50 %).", "",
              "Does the decoder read each word? Teacher-forced loss (nats per token) on 48 synth "
              "clips of 5 s (seed 3) with one word of each caption changed, minus the loss with "
              "the true captions (0: the word is ignored):", "",
              "| change | loss | gap |", "|---|---|---|"]
    lines += [f"| {r.change} | {r.loss:.4f} | {r.gap:+.4f} |" for r in reading.itertuples()]
    lines += ["", f"Learned the rules or the clips? The same loss with the true captions on the "
              f"first 48 clips of 5 s of its training seed (0): {seen['trained on']:.4f}; of "
              f"the held-out seed 3: {seen['held out']:.4f} (a gap of "
              f"{seen['held out'] - seen['trained on']:+.4f}: what it owes to having seen them)."]
    (run / "grade.md").write_text("\n".join(lines) + "\n")
    (run / "grade.json").write_text(json.dumps(
        {"model": graded, "settings": settings, "seconds": args.seconds, "per_attribute": n,
         "seed": args.seed, "codec": codec, "table": table.to_dict("records"),
         "caption_reading": reading.to_dict("records"), "prompt_seconds": args.prompt_seconds,
         "held": held_table.to_dict("records"), "memorised": seen.to_dict()},
        indent=2, default=float))
    print("\n".join(lines))


def stage_ship(args) -> None:
    import musicgen_edu as mg

    run = Path(args.run_dir)
    read = lambda name: json.loads((run / name).read_text())  # noqa: E731
    model = mg.load_model(str(run / "lm" / "model"), device="cpu", dtype="float32", cache=False)
    codec = read("codec.json")
    init = read("lm_init.json") if (run / "lm_init.json").is_file() else None   # lm --init
    codec_config = codec.pop("config", None) or torch.load(     # runs before codec.json kept it
        codec["checkpoint"], map_location="cpu", weights_only=False)["config"]
    codec["output_gain"] = calibrate(model) * codec.get("output_gain", 1.0)  # an --init's, too
    info = {"codec": codec, "codec_config": codec_config,
            "model_config": EduTinyConfig(),
            "training": read("lm/train_config.json"), "init": init,
            "result": read("lm/result.json")["final"],
            "decoder_updates": decoder_updates(str(run / "lm" / "model")),
            "grade": read("grade.json") if (run / "grade.json").is_file() else None}
    graded = (info["grade"] or {}).get("model", "")
    if not graded or Path(graded).resolve() != SHIPPED.resolve():
        print(f"note: the grade is of {graded or 'nothing yet'}, not of the float16 weights as "
              f"shipped; run `grade --model {SHIPPED}`, then `ship` again.")
    size = ship_model(model, SHIPPED, info)
    if info["grade"]:
        (SHIPPED / "EVAL.md").write_text((run / "grade.md").read_text())
    else:
        (SHIPPED / "EVAL.md").unlink(missing_ok=True)
    print(f"shipped {size / 2**20:.1f} MiB to {SHIPPED}")


def stage_calibrate(args) -> None:
    """Calibrate the shipped edu-tiny's codec output in place (for weights shipped before
    ``ship`` calibrated), grade it again into ``run_dir/calibrated`` and ship that grade.
    With ``--codec``, first put that checkpoint's decoder into the shipped codec (a
    ``train_codec.py --init`` run: the same encoder and codebooks, so the same tokens)."""
    import musicgen_edu as mg
    from musicgen_edu.train.codec import export_encodec

    info = json.loads((SHIPPED / "edu_tiny.json").read_text())
    gain = info["codec"].get("output_gain", 1.0)     # every gain folded in so far, multiplied
    if args.codec:
        started_path = Path(args.codec).parent / "init.json"
        if not started_path.is_file():
            raise SystemExit(f"{args.codec} has no {started_path.name} beside it: calibrate "
                             "--codec takes a `train_codec.py --init` run's checkpoint.")
        started = json.loads(started_path.read_text())
        if "decoder_updates" not in started:
            raise SystemExit(f"{started_path} does not say how many decoder-only updates its "
                             "run started from: start the run again with train_codec.py --init.")
        gain = started["output_gain"]               # the gains its decoder carried
        codec, codec_eval = load_codec(args.codec)
        shipped = info["codec"].get("decoder") or {}
        if (Path(shipped.get("checkpoint", "")).resolve() == Path(args.codec).resolve()
                and shipped.get("step") == codec_eval["step"]):
            raise SystemExit(f"{args.codec} (step {codec_eval['step']}) is the decoder already "
                             "shipped: nothing to calibrate.")
    model = mg.load_model(str(SHIPPED), device="cpu", dtype="float32", cache=False)
    if args.codec:
        check_same_codec(model, codec, str(SHIPPED), args.codec)
        decoder = export_encodec(codec).decoder.state_dict()
        model.model.audio_encoder.decoder.load_state_dict(decoder)
        info["codec"]["decoder"] = {"checkpoint": args.codec, **codec_eval,
                                    "quantizer_dropout": codec.config.quantizer_dropout,
                                    "updates": started["decoder_updates"] + codec_eval["step"],
                                    "started_from": started}
    info["codec"]["output_gain"] = calibrate(model) * gain
    info["grade"] = None                    # the old grade is not of these weights
    ship_model(model, SHIPPED, info)        # (EVAL.md goes with it until the new grade)
    ship_grade(args, info, "calibrated")
    print(f"output gain {info['codec']['output_gain']:.3f}; shipped and graded")


def stage_regrade(args) -> None:
    """Grade the shipped weights again into ``run_dir/regraded`` (after the grade gained a
    table, say) and ship that grade beside them; the weights stay as they are."""
    ship_grade(args, json.loads((SHIPPED / "edu_tiny.json").read_text()), "regraded")
    print(f"graded {SHIPPED} again; edu_tiny.json and EVAL.md hold the new grade")


def ship_grade(args, info: dict, folder: str) -> None:
    """Grade the weights in SHIPPED into ``run_dir/folder`` and ship them again with that grade
    in ``info`` (edu_tiny.json) and as EVAL.md."""
    import musicgen_edu as mg

    args.model, args.run_dir = str(SHIPPED), str(Path(args.run_dir) / folder)
    stage_grade(args, name=str(SHIPPED.relative_to(SHIPPED.parents[2])))   # as shipped
    run = Path(args.run_dir)
    info["grade"] = json.loads((run / "grade.json").read_text())
    ship_model(mg.load_model(str(SHIPPED), device="cpu", dtype="float32", cache=False),
               SHIPPED, info)
    (SHIPPED / "EVAL.md").write_text((run / "grade.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("lm", "grade", "ship", "calibrate", "regrade"))
    parser.add_argument("--run-dir", default="runs/edu-tiny")
    parser.add_argument("--codec", default=None,
                        help="lm: the codec checkpoint (train_codec.py's best.pt); with --init, "
                             "default: the init model's own codec. calibrate: ship this "
                             "checkpoint's decoder (a train_codec.py --init run)")
    parser.add_argument("--init", default=None,
                        help="lm: start from this trained edu-tiny folder, not new weights")
    parser.add_argument("--clips", type=int, default=2000, help="synth clips to train on")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per clip")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                        help="bf16: autocast, faster only where the CPU has AVX-512 BF16 or "
                             "AMX (or on a GPU); auto: bf16 on a GPU that supports it")
    parser.add_argument("--device", default="auto", help="lm: where to train (auto: cuda > "
                        "mps > cpu)")
    parser.add_argument("--contrast-weight", type=float, default=0.0,
                        help="lm: weight of the caption contrast (major <-> minor swapped) on "
                             "fresh synth heads each update, which also adds their own "
                             "cross-entropy (train/contrast.py); 0: off")
    contrast = ContrastConfig()             # the defaults of the flags below
    parser.add_argument("--contrast-margin", type=float, default=contrast.margin,
                        help="nats per token the true caption must win by")
    parser.add_argument("--contrast-heads", type=int, default=contrast.heads,
                        help="fresh clips per update")
    parser.add_argument("--contrast-seconds", type=float, default=contrast.seconds,
                        help="seconds of each fresh clip (its start)")
    parser.add_argument("--contrast-spans", type=int, default=contrast.spans,
                        help="hinges per fresh clip: its frames in this many equal runs, each "
                             "to be won by the margin (1: the clip as a whole; at most its "
                             "frames, checked against the codec's frame rate)")
    parser.add_argument("--contrast-seed", type=int, default=contrast.seed,
                        help="fresh clips of update n: synth seed (this) + n; a run going on "
                             "from another (--init) should pass one its heads did not use")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--model", default=None, help="grade this model instead of the run's")
    parser.add_argument("--per-attribute", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-seconds", type=float, default=1.0,
                        help="grade: seconds of the synth the model continues (the held table)")
    args = parser.parse_args()
    try:                                    # every number bounded before any work starts
        for flag, value, low, high in (
                ("--clips", args.clips, 1, 100_000),
                ("--steps", args.steps, 1, 10_000_000),
                ("--batch-size", args.batch_size, 1, 1024),
                ("--warmup", args.warmup, 0, 1_000_000),
                ("--checkpoint-every", args.checkpoint_every, 1, 1_000_000),
                ("--threads", args.threads, 0, 1024),
                ("--per-attribute", args.per_attribute, 1, 10_000),
                ("--contrast-heads", args.contrast_heads, 1, 1024),
                ("--contrast-spans", args.contrast_spans, 1, 60),
                ("--contrast-seed", args.contrast_seed, 0, 2**62),
                ("--seed", args.seed, 0, 2**32 - 1)):
            check_int(flag, value, low, high)
        check_range("--seconds", args.seconds, 0.0, 30.0, low_open=True)   # the model's window
        check_range("--prompt-seconds", args.prompt_seconds, 0.0, args.seconds, low_open=True,
                    high_open=True, hint="(below --seconds: something must be left to judge)")
        check_range("--clips x --seconds", args.clips * args.seconds, 0.0, 36_000.0,
                    hint="(10 hours of audio, encoded once)")
        check_range("--lr", args.lr, 0.0, 1.0, low_open=True)
        check_range("--contrast-weight", args.contrast_weight, 0.0, 100.0)
        check_range("--contrast-margin", args.contrast_margin, 0.0, 10.0)
        check_range("--contrast-seconds", args.contrast_seconds, 0.5, 30.0)
        check_range("--contrast-heads x --contrast-seconds",
                    args.contrast_heads * args.contrast_seconds, 0.0, MAX_HEAD_SECONDS,
                    hint="(seconds of audio rendered and scored twice per update)")
    except ConfigError as err:              # guidance, temperature, top-k: GenerationConfig's
        parser.error(str(err))
    unused = [flag for flag, value, default in (
        ("--contrast-margin", args.contrast_margin, contrast.margin),
        ("--contrast-heads", args.contrast_heads, contrast.heads),
        ("--contrast-seconds", args.contrast_seconds, contrast.seconds),
        ("--contrast-spans", args.contrast_spans, contrast.spans),
        ("--contrast-seed", args.contrast_seed, contrast.seed)) if value != default]
    if unused and args.contrast_weight == 0:
        parser.error(f"{', '.join(unused)} only act with --contrast-weight above 0 (now 0).")
    for flag, path in (("--codec", args.codec), ("--init", args.init)):
        if path is not None and not Path(path).exists():
            parser.error(f"{flag} {path!r}: no such file or folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    {"lm": stage_lm, "grade": stage_grade, "ship": stage_ship,
     "calibrate": stage_calibrate, "regrade": stage_regrade}[args.stage](args)


if __name__ == "__main__":
    main()
