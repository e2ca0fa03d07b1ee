"""Fine-tuning: teach a MusicGen your own music, fully or with LoRA, resumably.

One file per stage, each read top to bottom:

    config.py      TrainConfig: the run's settings, with units and ranges
    data.py        captioned clips -> windows -> EnCodec tokens on disk (TokenDataset)
    objective.py   the training step: delay pattern, masks, one cross-entropy per codebook
    lora.py        what trains: the decoder, or LoRA adapters through peft
    checkpoint.py  atomic checkpoints that resume a run exactly
    report.py      log.csv, the curves, sample clips at each checkpoint
    loop.py        Trainer and train(): the loop that ties them together
    toy.py         arpeggio_clips: a numpy-made set of clips to practise on (lecture 10)
    synth.py       captioned synthetic music (instrument, texture, mode, tempo, register,
                   drums, bass): the data of the edu-tiny model (issue #30)
    eval.py        estimators that hear those attributes in a clip (tempo, mode, register,
                   instrument)
    grade.py       Judges and grade(): prompts that differ in one attribute, judged by ear
    codec.py       a small EnCodec: transformers' encoder/decoder + our EMA residual VQ
                   (k-means start, dead-code restarts), mel + SI-SNR losses, export_encodec
                   and import_encodec, calibrate_output (the decode's sign, which those
                   losses cannot hear)
    codec_loop.py  CodecTrainer: warm-up, k-means, quantised training with quantizer
                   dropout, held-out SI-SNR and code use, best checkpoint, exact resume;
                   decoder_only: a trained codec's decoder alone, every code kept
    edu_tiny.py    build_edu_tiny (a MusicGen around the trained codec), its token data,
                   ship_model (the float16 weights load_model("edu-tiny") reads)
    contrast.py    ContrastTrainer: the Trainer plus a caption contrast (the tokens must be
                   likelier under their caption than with "major" and "minor" swapped)

``mg.train(data, model, run_dir, **settings)`` runs it from Python, ``musicgen-edu train``
from the shell, and lecture 10 walks through it. The result folder loads with
``mg.load_model(run_dir / "model")`` on every backend.
"""

from .codec import Codec, CodecConfig
from .codec_loop import CodecTrainer
from .config import PRECISIONS, TrainConfig
from .contrast import ContrastConfig, ContrastTrainer
from .data import TokenDataset, build_dataset, find_clips, write_dataset
from .edu_tiny import EduTinyConfig, build_edu_tiny, ship_model, synth_token_dataset
from .grade import (
    Judges,
    accuracy_table,
    caption_reading,
    codec_generate,
    continuation_generate,
    memorised,
    model_generate,
    synth_generate,
    trimmed,
)
from .grade import grade as grade_attributes  # the name grade stays the module
from .loop import Trainer, TrainResult, train
from .objective import delayed_inputs, training_step
from .report import plot_curves
from .synth import ClipSpec, synth_clips
from .toy import arpeggio_clips

__all__ = ["TrainConfig", "PRECISIONS", "TokenDataset", "build_dataset", "find_clips",
           "write_dataset", "Trainer", "TrainResult", "train", "delayed_inputs", "training_step",
           "plot_curves", "arpeggio_clips", "Codec", "CodecConfig", "CodecTrainer",
           "EduTinyConfig", "build_edu_tiny", "ship_model", "synth_token_dataset", "Judges",
           "accuracy_table", "codec_generate", "continuation_generate", "trimmed",
           "grade_attributes", "model_generate", "caption_reading", "memorised", "synth_generate",
           "ContrastConfig", "ContrastTrainer", "ClipSpec", "synth_clips"]
