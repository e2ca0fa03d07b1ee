"""The ``musicgen-edu train`` command: fine-tune a MusicGen on captioned clips from the shell.

A thin caller of :class:`~musicgen_edu.train.Trainer` (lecture 10), registered in
``cli/__init__.py`` like the measuring commands. The path of one run::

    DATA (a folder of captioned clips, or a captions table) + -m MODEL + -o RUN
      -> TrainConfig(every option below)   a bad value: exit 2, nothing written
      -> Trainer(...)                       RUN must be new unless --resume; DataError,
                                            ModelLoadError: exit 2 with the message
      -> fit()                              checkpoints in RUN/checkpoints every N updates
      -> a summary: updates, the last loss and accuracy per codebook, RUN/model and the
         ``musicgen-edu generate ... -m RUN/model`` command that plays with it

One option per :class:`~musicgen_edu.train.TrainConfig` field (``--learning-rate``, ``--lora``,
``--sample-caption`` repeated, ...), with its default and range taken from the field
(:func:`~musicgen_edu.cli.common.config_option`), as ``generate`` takes its from
``GenerationConfig``. Ctrl-C exits with 130 and keeps the checkpoints: the same command with
``--resume`` continues from the newest one.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import NoReturn

import typer

from ..train import TrainConfig
from .common import EXIT_INTERRUPTED, config_option

__all__ = ["train"]


def _option(name: str, *flags: str, help: str):
    """``--name`` for the TrainConfig field ``name``: its default and range, in the help's
    panel of training settings."""
    return config_option(TrainConfig, name, *flags, help=help, panel="Training settings")


def _interrupted(run_dir: Path) -> NoReturn:
    """Ctrl-C: say what is kept and how to go on, exit 130."""
    from rich.console import Console

    from ..train.checkpoint import latest_checkpoint

    last = latest_checkpoint(run_dir / "checkpoints")
    kept = (f"the newest checkpoint, {last}, is kept" if last is not None else
            "no checkpoint was written yet (encoded clips in tokens/ are kept)")
    Console(stderr=True).print(f"interrupted (Ctrl-C); {kept}. Run the same command with "
                               "--resume to continue.", highlight=False)
    raise typer.Exit(code=EXIT_INTERRUPTED)


def _saved_settings(ctx: typer.Context, run_dir: Path, model: str,
                    settings: dict) -> tuple[str, dict]:
    """On --resume: every option left at its default takes the run's value (its
    train_config.json), so ``train DATA -o RUN --resume --steps 400`` is enough."""
    saved = run_dir / "train_config.json"
    if not saved.is_file():
        return model, settings
    before = json.loads(saved.read_text(encoding="utf-8"))

    def default(name: str) -> bool:     # by name: typer may vendor its own click
        source = ctx.get_parameter_source(name)
        return source is None or source.name == "DEFAULT"

    settings = {name: (tuple(before[name]) if name == "sample_captions" else before[name])
                if default(name) and name in before else value
                for name, value in settings.items()}
    return (before.get("base_model", model) if default("model") else model), settings


def train(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="A folder of audio clips with captions (captions.csv "
                                          "/ .jsonl, or clip.txt / clip.json beside each clip), "
                                          "or a captions table (columns path, caption)."),
    model: str = typer.Option("debug", "--model", "-m",
                              help="The model to start from: 'debug' (offline), a hub id or a "
                                   "folder."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Run folder: checkpoints, log.csv, curves.png, samples/ and "
                                     "model/ (the fine-tuned model)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in --output from its newest checkpoint; "
                                     "settings not given take the run's (only --steps may "
                                     "change)."),
    steps: int = _option("steps", help="Optimizer updates in all (on --resume: the new total)."),
    batch_size: int = _option("batch_size", help="Windows per forward pass."),
    grad_accum: int = _option("grad_accum", help="Forward passes per update."),
    learning_rate: float = _option("learning_rate",
                                   help="Peak AdamW step size (after warm-up; cosine decay)."),
    warmup_steps: int = _option("warmup_steps",
                                help="Updates of linear warm-up (at most --steps)."),
    weight_decay: float = _option("weight_decay", help="AdamW decoupled weight decay."),
    max_grad_norm: float = _option("max_grad_norm", help="Gradient-norm clipping threshold."),
    caption_dropout: float = _option("caption_dropout",
                                     help="Probability that a window's caption is replaced by "
                                          "the empty one."),
    lora: bool = _option("lora", "--lora",
                         help="Train LoRA adapters (peft) instead of the whole decoder."),
    lora_rank: int = _option("lora_rank", help="With --lora: rank r of each adapter."),
    lora_alpha: int = _option("lora_alpha",
                                help="With --lora: adapters are scaled by alpha / rank."),
    lora_dropout: float = _option("lora_dropout",
                                  help="With --lora: dropout probability on the adapters' "
                                       "input."),
    window: float = _option("window", help="Seconds per training window (clips are cut into "
                                           "windows; a shorter clip is refused)."),
    hop: float = _option("hop", help="Seconds between window starts (= --window: no overlap)."),
    checkpoint_every: int = _option("checkpoint_every",
                                    help="Updates between checkpoints (and sample clips)."),
    keep_checkpoints: int = _option("keep_checkpoints", help="Newest checkpoints kept on disk."),
    seed: int = _option("seed", help="Seed of the data order, caption dropout and LoRA init."),
    precision: str = _option("precision", help="Compute precision."),
    sample_captions: list[str] = _option("sample_captions", "--sample-caption",
                                         help="Caption of a sample clip made at each checkpoint; "
                                              "repeat it (default: the first two captions of "
                                              "DATA)."),
    sample_seconds: float = _option("sample_seconds",
                                    help="Seconds of each checkpoint's sample clips."),
    save_adapter: bool = _option("save_adapter", "--save-adapter",
                                 help="With --lora: also save the adapter alone (peft format) "
                                      "in RUN/adapter."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON object (folders, steps, last losses and "
                                      "accuracies) instead of text."),
):
    """Fine-tune a MusicGen on your captioned clips (fully or with --lora), resumably.

    The run folder's model/ loads like any model: musicgen-edu generate "..." -m RUN/model.

    Example: musicgen-edu train clips/ -m debug -o runs/mine --lora --steps 200 --window 5
    """
    from rich.console import Console
    from rich.markup import escape

    from ..train import Trainer

    settings = dict(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate,
        warmup_steps=warmup_steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
        caption_dropout=caption_dropout, lora=lora, lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_dropout=lora_dropout, window=window, hop=hop, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints, seed=seed, precision=precision,
        sample_captions=tuple(sample_captions), sample_seconds=sample_seconds,
        save_adapter=save_adapter)
    if resume:                          # what the command line leaves out: the run's own
        model, settings = _saved_settings(ctx, output, model, settings)
    config = TrainConfig(**settings)    # a bad value: exit 2, nothing written
    try:
        trainer = Trainer(model, data, output, config, resume=resume, device=device,
                          progress=progress)
        result = trainer.fit()
    except KeyboardInterrupt:
        _interrupted(output)
    caption = (list(config.sample_captions) or sorted(set(trainer.data.captions)))[0]
    play = (f"musicgen-edu generate {shlex.quote(caption)} -m "
            f"{shlex.quote(str(result.model_dir.resolve()))}")
    k = trainer.model.num_codebooks
    accuracy = [float(result.final.get(f"accuracy_{i}", float("nan"))) for i in range(k)]
    loss = float(result.final.get("loss", float("nan")))
    if as_json:
        print(json.dumps(dict(run_dir=str(result.run_dir.resolve()),
                              model_dir=str(result.model_dir.resolve()),
                              adapter_dir=result.adapter_dir and str(result.adapter_dir.resolve()),
                              steps=result.steps, resumed_from=trainer.resumed_from, loss=loss,
                              accuracy=accuracy, generate=play), indent=2))
        return
    console = Console()
    resumed = (f" (resumed at update {trainer.resumed_from})"
               if trainer.resumed_from is not None else "")
    console.print(f"[green]trained {escape(trainer.model.name)} for {result.steps} updates{resumed}: "
                  f"last loss {loss:.4f}, accuracy per codebook "
                  f"{' '.join(f'{a:.3f}' for a in accuracy)}[/]", highlight=False)
    console.print(f"model: [bold]{escape(str(result.model_dir.resolve()))}[/]", highlight=False)
    if result.adapter_dir is not None:
        console.print(f"adapter: {result.adapter_dir.resolve()}", highlight=False, markup=False)
    console.print(f"log, curves, samples: {result.run_dir.resolve()}", highlight=False,
                  markup=False)
    console.print(f"generate with it: {play}", highlight=False, markup=False)
    console.print("train further: the same command with --resume and a larger --steps",
                  highlight=False)
