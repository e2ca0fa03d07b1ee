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
                   drums, bass): the data of the edu-tiny model to come (issue #30)
    eval.py        estimators that hear those attributes in a clip (tempo, mode, register,
                   instrument): how edu-tiny's generations will be graded
    codec.py       a small EnCodec: transformers' encoder/decoder + our EMA residual VQ
                   (k-means start, dead-code restarts), mel + SI-SNR losses, export_encodec
    codec_loop.py  CodecTrainer: warm-up, k-means, quantised training with quantizer
                   dropout, held-out SI-SNR and code use, best checkpoint, exact resume

``mg.train(data, model, run_dir, **settings)`` runs it from Python, ``musicgen-edu train``
from the shell, and lecture 10 walks through it. The result folder loads with
``mg.load_model(run_dir / "model")`` on every backend.
"""

from .config import PRECISIONS, TrainConfig
from .data import TokenDataset, build_dataset, find_clips, write_dataset
from .loop import Trainer, TrainResult, train
from .objective import delayed_inputs, training_step
from .report import plot_curves
from .toy import arpeggio_clips

__all__ = ["TrainConfig", "PRECISIONS", "TokenDataset", "build_dataset", "find_clips",
           "write_dataset", "Trainer", "TrainResult", "train", "delayed_inputs", "training_step",
           "plot_curves", "arpeggio_clips"]
