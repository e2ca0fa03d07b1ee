"""The measuring commands of ``musicgen-edu``: ``evaluate``, ``profile`` and ``experiments``.

Each is a thin caller of the library function a lecture uses, written as a plain function;
``cli/__init__.py`` registers them on its app with the shared exit codes and one-paragraph
errors of ``common.py``::

    evaluate     -> mg.metrics.evaluate.evaluate_files (describe, clap_score, fad)   lecture 08
    profile      -> mg.metrics.profile_generation + profile_summary
                    (+ measure_bandwidth and decode_bound with --bound)              lecture 05
    experiments  -> musicgen_edu.experiments.run_experiments (papermill per run)     lecture 06

Tables go to stdout as a rich table, CSV or JSON (``--format``); notices go to stderr, so
``--format csv > out.csv`` stays clean.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import click
import typer
from typer.core import TyperCommand

from ..errors import ConfigError
from ..models import DEFAULT_MODEL
from .common import EXIT_FAILED_ROWS, EXIT_OK, emit, fail, notice

__all__ = ["evaluate", "profile", "experiments", "PairsCommand"]

_EVALUATE_COLUMNS = ["file", "duration_s", "loudness_lufs", "peak_dbfs", "centroid_hz",
                     "tempo_bpm", "key", "clap_score", "clap_meaningful", "fad"]
_PROFILE_COLUMNS = ["backend", "duration", "batch_size", "runs", "steps", "first_step_s",
                    "step_s", "steady_steps_per_s", "rtf", "peak_memory_mb",
                    "bound_steps_per_s", "efficiency"]


def _numbers(name: str, text: str, kind=float) -> list:
    """'1,2.5' -> [1.0, 2.5]; a bad entry is a ConfigError naming it."""
    values = []
    for part in text.split(","):
        try:
            values.append(kind(part.strip()))
        except ValueError:
            raise ConfigError(f"--{name} takes {kind.__name__}s separated by commas (e.g. "
                              f"'1,2'), got {part.strip()!r} in {text!r}.") from None
    return values


def evaluate(
    files: list[Path] = typer.Argument(...,
                                       help="Audio files to measure (.wav, .flac, .ogg, .mp3)."),
    prompt: list[str] = typer.Option([], "--prompt",
                                     help="Text the files were made from: once for all files, or "
                                          "once per file (repeat the option)."),
    prompts: Path | None = typer.Option(None, "--prompts",
                                        help="CSV with columns file,prompt (instead of --prompt)."),
    reference: Path | None = typer.Option(None, "--reference",
                                          help="Folder of reference clips: adds the FAD of FILES "
                                               "against them."),
    clap: str = typer.Option("laion/clap-htsat-unfused", "--clap",
                             help="CLAP model: a hub id (network once) or 'random' (offline, "
                                  "meaningless numbers)."),
    embedding: str = typer.Option("clap", "--embedding",
                                  help="FAD embedding: clap (one per clip) or encodec (every "
                                       "frame; MusicGen's EnCodec of --model)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="Model whose EnCodec embeds with --embedding encodec."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
):
    """Descriptors, CLAP text-audio score and FAD of audio files, one row per file.

    Example: musicgen-edu evaluate out/*.wav --prompt "lo-fi piano" --reference real/ --clap random
    """
    from ..metrics.evaluate import evaluate_files, read_prompts

    if prompt and prompts is not None:
        fail("give --prompt or --prompts, not both.")
    texts = read_prompts(prompts, files) if prompts is not None else (list(prompt) or None)
    if texts is not None and len(texts) == 1:
        texts = texts * len(files)
    table = evaluate_files(files, texts, reference, clap=clap, embedding=embedding, model=model,
                           device=device)
    if table.attrs.get("warning"):
        notice(f"warning: {table.attrs['warning']}")
    emit(table, fmt, _EVALUATE_COLUMNS, title="evaluation")
    if "fad" in table and fmt == "table":
        notice(f"FAD vs {reference} ({table.attrs['reference_files']} clips, "
               f"{table.attrs['fad_embedding']} embedding): {table['fad'].iloc[0]:.4g}")


def profile(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="'edu-tiny' (offline, shipped), 'debug' (offline "
                                   "noise, fast), a hub id or a folder."),
    backend: str = typer.Option("native", help="native (fast), native-int8 or transformers."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    durations: str = typer.Option("1,2", help="Seconds of audio per run, comma separated."),
    batch_sizes: str = typer.Option("1,2", help="Items generated together, comma separated."),
    repeats: int = typer.Option(3, help="Timed runs per (duration, batch size)."),
    warmup: int = typer.Option(1, help="Untimed runs first (kernels, allocator, lazy init)."),
    prompt: str = typer.Option("lo-fi piano", help="The prompt of every run."),
    bound: bool = typer.Option(False, "--bound",
                               help="Add the memory-bandwidth bound per step (decode_bound with "
                                    "the measured bandwidth)."),
    bandwidth_mb: float = typer.Option(256,
                                       help="MiB per tensor of the bandwidth benchmark (--bound)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
):
    """Time generation over durations and batch sizes: median per set-up (lecture 05).

    Example: musicgen-edu profile -m facebook/musicgen-small --durations 2,8 --batch-sizes 1,4 --bound
    """
    from ..generator import MusicGenerator
    from ..metrics import decode_bound, measure_bandwidth, profile_generation, profile_summary

    sizes = _numbers("batch-sizes", batch_sizes, int)
    seconds = _numbers("durations", durations)
    gen = MusicGenerator(model, device=device, dtype=dtype, backend=backend, progress=False)
    runs = profile_generation(gen, prompt, durations=seconds, batch_sizes=sizes,
                              repeats=repeats, warmup=warmup)
    summary = profile_summary(runs)
    if bound:
        bandwidth = measure_bandwidth(gen.model.device, size_mb=bandwidth_mb)
        limits = [decode_bound(gen, batch_size=int(row.batch_size), cache_len=int(row.steps) // 2,
                               cfg=float(row.guidance_scale) > 1, bandwidth_gbs=bandwidth)
                  for row in summary.itertuples()]
        summary["bandwidth_gbs"] = bandwidth
        summary["bytes_per_step"] = [b["bytes_per_step"] for b in limits]
        summary["bound_steps_per_s"] = [b["bound_steps_per_s"] for b in limits]
        summary["efficiency"] = summary["steady_steps_per_s"] / summary["bound_steps_per_s"]
        if fmt == "table":
            notice(f"measured bandwidth {bandwidth:.1f} GB/s; efficiency = steady steps/s "
                   "over the bound (1.0 = reading memory is the only cost)")
    emit(summary, fmt, _PROFILE_COLUMNS, title=f"profile: {gen.model.name} on {gen.model.device}")


def _grid_axis(text: str) -> tuple[str, list]:
    """'MAX_BATCH_SIZE=1,4,8' -> ('MAX_BATCH_SIZE', [1, 4, 8]); 'SEEDS=[[0],[0,1]]' -> a list."""
    from ..experiments import parse_value

    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ConfigError(f"--grid takes KEY=V1,V2,... (e.g. MAX_BATCH_SIZE=1,4,8), got {text!r}.")
    whole = parse_value(values)
    if isinstance(whole, list) and values.strip().startswith("["):
        return key.strip(), whole
    return key.strip(), [parse_value(v.strip()) for v in values.split(",")]


class PairsCommand(TyperCommand):
    """A command whose ``--parameter`` takes two values, ``-p KEY VALUE`` (as papermill's).

    ``experiments`` is registered with ``cls=PairsCommand``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "parameter":
                param.nargs, param.type = 2, click.Tuple([str, str])


def experiments(
    notebook: Path = typer.Argument(...,
                                    help="The notebook to run (it needs a 'parameters' cell and "
                                         "writes RESULTS_PATH)."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Folder for one sub-folder per run and experiments.csv."),
    parameter: list[str] = typer.Option([], "--parameter", "-p", metavar="KEY VALUE",
                                        help="A parameter of every run (VALUE is JSON if it "
                                             "parses, else text); repeat it."),
    grid: list[str] = typer.Option([], "--grid",
                                   help="KEY=V1,V2,...: one run per combination of all --grid "
                                        "axes."),
    sets: Path | None = typer.Option(None, "--sets",
                                     help="A JSON file: a list of parameter dicts, one per run "
                                          "(with an optional 'name')."),
    kernel: str = typer.Option("python3", help="Jupyter kernel name."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Skip runs that finished before with the same parameters."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
):
    """Run a lecture notebook over parameter sets with papermill; one results table (lecture 06).

    Example: musicgen-edu experiments notebooks/06_experiments.ipynb -o runs -p MODEL debug
    --grid MAX_BATCH_SIZE=1,4,8
    """
    from ..experiments import TABLE_NAME, parameter_grid, parse_value, run_experiments

    if grid and sets is not None:
        fail("give --grid or --sets, not both.")
    # typer hands each `-p KEY VALUE` pair over as the text of a Python tuple: read it back
    pairs = [ast.literal_eval(p) if p.startswith("(") else (p, "") for p in parameter]
    common = {key: parse_value(value) for key, value in pairs}
    if sets is not None:
        if not sets.is_file():
            fail(f"--sets file '{sets}' not found.")
        try:
            parameter_sets = json.loads(sets.read_text())
        except ValueError as exc:
            raise ConfigError(f"--sets file '{sets}' is not JSON ({exc}); write a list of "
                              "objects, e.g. [{\"name\": \"b1\", \"MAX_BATCH_SIZE\": 1}].") from None
    elif grid:
        parameter_sets = parameter_grid(**dict(_grid_axis(g) for g in grid))
    else:
        parameter_sets = [{"name": "run"}]
    table = run_experiments(parameter_sets, output, notebook, common, kernel, resume=resume,
                            on_run=lambda name, r: notice(
                                f"{name}: {'resumed' if r['resumed'] else r['status']} "
                                f"{r['error']}".rstrip()))
    emit(table, fmt, ["run", "status", "resumed", "error"], title=f"{output / TABLE_NAME}")
    raise typer.Exit(code=EXIT_OK if (table["status"] == "ok").all() else EXIT_FAILED_ROWS)
