"""The ``musicgen-edu`` command line (typer + rich): every lecture job from the shell.

The package in four files, each importing only the ones below it (no circle)::

    __init__.py   the app and main() (the console script and ``python -m musicgen_edu``);
      |           generate, batch, prompt, info, serve, config show; registers every command
      +--> measure.py   evaluate, profile, experiments (plain functions)
      +--> train.py     train (plain function)
      +--> audiocraft.py   convert, install-audiocraft (plain functions)
      |         |
      +---------+--> common.py   exit codes, fail, notice, guard, emit, config_option

How a command is registered: the commands of this file carry ``@command()``; a command file
(``measure.py``, ``train.py``) holds plain functions whose typer options are their
defaults, imports only ``common.py`` and the library, and is registered at the end of this
file, in one place: ``from .train import train`` at the top and ``command()(train)`` beside
``command()(evaluate)``. :func:`command` wraps each in
:func:`~musicgen_edu.cli.common.guard`, so every command has the same exit codes and errors.
The path of one command::

    shell -> typer parses the options -> guard(command) -> the library function it names
          -> stdout: a table (rich), or --json / --format csv|json for scripts
          -> exit code: 0 ok | 1 some rows or runs failed | 2 a MusicGenEduError or bad usage
                        | 130 interrupted (Ctrl-C)

A thin caller of the library (:class:`~musicgen_edu.generator.MusicGenerator`,
:class:`~musicgen_edu.batch.runner.BatchRunner`, ``mg.metrics``, ...): it validates nothing
itself beyond paths, so the CLI and notebooks share one set of rules and error messages; the
``generate`` options take their defaults and the ranges in their help from
:class:`~musicgen_edu.generation.GenerationConfig`'s fields, the ``train`` options from
:class:`~musicgen_edu.train.TrainConfig`'s (``common.config_option``). Errors of
the package print as one red paragraph on stderr (exit code 2), never as a traceback. Help
texts are rich markup: write ``\\[`` for a literal ``[`` (``musicgen-edu\\[ray]``).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import typer

from ..generation import GenerationConfig
from ..models import DEFAULT_MODEL
from .audiocraft import convert, install_audiocraft
from .common import EXIT_FAILED_ROWS, EXIT_INTERRUPTED, EXIT_OK, config_option, fail, guard
from .measure import PairsCommand, evaluate, experiments, profile
from .train import train

__all__ = ["app", "main", "command"]

app = typer.Typer(help="Generate music with MusicGen, measure it, and inspect your set-up.\n\n"
                  "Exit codes: 0 ok, 1 some rows or runs failed, 2 an error of the package "
                  "(the message says what to change) or a usage error, 130 interrupted.",
                  no_args_is_help=True, add_completion=False)


def command(*args, **kwargs):
    """``@app.command(...)`` with :func:`~musicgen_edu.cli.common.guard` around the function."""
    def register(function):
        return app.command(*args, **kwargs)(guard(function))
    return register


# ---------------------------------------------------------------- generation settings

def _config_option(name: str, *flags: str, help: str, hint: str | None = None):
    """``--name`` for the GenerationConfig field ``name``: its default and range
    (:func:`~musicgen_edu.cli.common.config_option`)."""
    return config_option(GenerationConfig, name, *flags, help=help, hint=hint)


def _targets(output: Path, count: int) -> list[Path]:
    """Where ``Generation.save`` will write: ``out.wav`` or ``out_0.wav, out_1.wav, ...``."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


@command()
def generate(
    prompts: list[str] = typer.Argument(..., help="One or more text prompts (batched together)."),
    duration: float = _config_option("duration", "--duration", "-d", help="Seconds per clip."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="'edu-tiny' (offline, shipped), 'debug' (offline "
                                   "noise, fast), a hub id or a folder."),
    output: Path = typer.Option(Path("musicgen.wav"), "--output", "-o",
                                help="File to write (.wav/.flac/.ogg/.mp3)."),
    seed: int | None = _config_option("seed", help="Random seed (item i uses seed + i).",
                                         hint="Omit it for a random one (--json shows it)."),
    top_k: int = _config_option("top_k", help="Top-k filter: keep the k most likely tokens."),
    top_p: float = _config_option("top_p", help="Nucleus filter: keep this much probability."),
    temperature: float = _config_option("temperature", help="Softmax temperature.",
                                        hint="Lower is more predictable."),
    guidance_scale: float = _config_option("guidance_scale", "--guidance-scale", "--cfg",
                                           help="Classifier-free guidance strength."),
    negative_prompt: str | None = typer.Option(None, "--negative",
                                               help="Steer away from this text."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    backend: str = typer.Option("native", help="native (fast), native-int8 or transformers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON object (files, seeds, timings) instead of "
                                      "text."),
):
    """Generate music from text and write it to a file (atomically).

    Example: musicgen-edu generate "lo-fi piano, 80 bpm" -d 8 --seed 1 -o piano.wav
    """
    from rich.console import Console

    from ..generator import MusicGenerator

    targets = _targets(output, len(prompts))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:  # refuse before spending minutes on generation
        fail(f"{', '.join(existing)} already exist(s); pass --overwrite or choose another --output.")
    gen = MusicGenerator(model, device=device, dtype=dtype, backend=backend, progress=progress)
    result = gen.generate(prompts, duration=duration, seed=seed, top_k=top_k, top_p=top_p,
                          temperature=temperature, guidance_scale=guidance_scale,
                          negative_prompt=negative_prompt)
    paths = result.save(output, overwrite=overwrite)
    if as_json:
        print(json.dumps(dict(files=[str(p.resolve()) for p in paths], prompts=result.prompts,
                              seeds=result.seeds, model=result.model_name,
                              duration=result.duration, sample_rate=result.sample_rate,
                              timings=result.timings), indent=2, default=str))
        return
    console = Console()
    console.print(f"[green]{result.summary()}[/]", highlight=False)
    for path in paths:
        console.print(f"wrote [bold]{path.resolve()}[/]", highlight=False)


@command()
def batch(
    source: Path = typer.Argument(...,
                                  help="CSV or JSONL of rows: prompt, duration, seed, ... (other "
                                       "columns are kept as metadata)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the clips and manifest."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="'edu-tiny' (offline, shipped), 'debug' (offline "
                                   "noise, fast), a hub id or a folder."),
    resume: bool = typer.Option(False, "--resume", help="Skip items already in the manifest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate and replace files."),
    max_batch_size: int = typer.Option(8, help="Largest batch (halved on out-of-memory)."),
    executor: str = typer.Option("local",
                                 help="local, or ray (pip install 'musicgen-edu\\[ray]')."),
    workers: int | None = typer.Option(None, help="Ray actors (default: one per GPU)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    backend: str = typer.Option("native", help="native (fast), native-int8 or transformers."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Generate every row of a table into a folder, with a manifest; resumable.

    Example: musicgen-edu batch prompts.csv -o runs/monday --max-batch-size 4 --resume
    """
    from rich.console import Console
    from rich.markup import escape

    from ..batch import run_batch

    table = run_batch(source, output, model=model, resume=resume, max_batch_size=max_batch_size,
                      executor=executor, overwrite=overwrite, progress=progress,
                      num_workers=workers, device=device, dtype=dtype, backend=backend)
    console = Console()
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    resumed = int(table["resumed"].fillna(False).astype(bool).sum()) if "resumed" in table else 0
    console.print(f"{len(table)} rows: {counts.get('ok', 0)} ok ({resumed} resumed), "
                  f"{counts.get('invalid', 0)} invalid, {counts.get('failed', 0)} failed; "
                  f"manifest in {Path(output).resolve()}", highlight=False)
    for row in table[table["status"] != "ok"].itertuples():
        console.print(f"[red]{escape(str(row.error))}[/]", highlight=False)
    raise typer.Exit(code=EXIT_OK if counts.get("ok", 0) == len(table) else EXIT_FAILED_ROWS)


@command()
def prompt(
    text: str = typer.Argument(..., help="The prompt to check."),
    improve: bool = typer.Option(False, "--improve", help="Also print an improved prompt."),
    variations: int = typer.Option(0, "--variations", "-n", help="Also print N variations."),
    seed: int = typer.Option(0, help="Seed for improvements and variations."),
    model: str | None = typer.Option(None, "--model", "-m",
                                        help="Count tokens with this model's tokenizer."),
):
    """Validate a prompt, show its facets, and optionally improve it or vary it.

    Example: musicgen-edu prompt "calm piano" --improve -n 3
    """
    from ..prompt import PromptEngineer, prompt_report

    print(prompt_report(text, improve=improve, variations=variations, seed=seed, model=model))
    ok = PromptEngineer(model).validate(text).ok
    raise typer.Exit(code=EXIT_OK if ok else EXIT_FAILED_ROWS)


def _info() -> dict:
    """Versions, the device and dtype "auto" picks, and every loadable model."""
    import numpy
    import torch
    import transformers

    from .. import __version__
    from ..models import DEBUG_MODELS, HUB_MODELS, RANDOM_MODELS, resolve_device, resolve_dtype

    dev = resolve_device("auto")
    models = [dict(name=name, channels=channels, melody=melody, size="~2M (random)",
                   needs="nothing (offline)") for name, (channels, melody) in DEBUG_MODELS.items()]
    for name in RANDOM_MODELS:
        size = HUB_MODELS[name.replace("random", "facebook/musicgen")][2]
        models.append(dict(name=name, channels=1, melody=False, size=f"{size}M (random)",
                           needs="nothing (offline)"))
    models += [dict(name=name, channels=channels, melody=melody, size=f"{size}M",
                    needs="network once") for name, (channels, melody, size) in HUB_MODELS.items()]
    return {"versions": {"musicgen_edu": __version__, "python": platform.python_version(),
                         "torch": torch.__version__, "transformers": transformers.__version__,
                         "numpy": numpy.__version__},
            "device": str(dev), "dtype": str(resolve_dtype("auto", dev)),
            "cuda": torch.cuda.get_device_name() if dev.type == "cuda" else None,
            "models": models}


@command()
def info(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """Print versions, the device that 'auto' picks, and the models you can load.

    Example: musicgen-edu info --json
    """
    from rich.console import Console
    from rich.table import Table

    facts = _info()
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    console = Console()
    table = Table(title="musicgen_edu", show_header=False)
    for key, value in [*facts["versions"].items(), ("device (auto)", facts["device"]),
                       ("dtype (auto)", facts["dtype"]), ("cuda", facts["cuda"] or "not available")]:
        table.add_row(key, value)
    console.print(table)
    models = Table(title="models")
    for col in ("name", "channels", "melody", "size", "needs"):
        models.add_column(col, no_wrap=(col == "name"))
    for model in facts["models"]:
        models.add_row(*(str(v) for v in model.values()))
    console.print(models)


@command()
def serve(
    host: str | None = typer.Option(None, help="Interface to bind (setting api_host)."),
    port: int | None = typer.Option(None, help="TCP port (setting api_port)."),
    model: str | None = typer.Option(None, "--model", "-m",
                                        help="Default model (setting default_model)."),
    env: str | None = typer.Option(None, help="Profile: development or production "
                                      "(default $MUSICGEN_ENV or development)."),
    tls_certfile: Path | None = typer.Option(None, help="PEM certificate: serve HTTPS (setting "
                                                        "tls_certfile; with --tls-keyfile)."),
    tls_keyfile: Path | None = typer.Option(None, help="PEM private key of the certificate "
                                                       "(setting tls_keyfile)."),
    workers: int | None = typer.Option(None, help="Generation threads in this process (setting "
                                       "workers); 0 = API only, jobs run by musicgen-edu worker."),
):
    """Run the REST + streaming service (pip install 'musicgen-edu\\[serve]') until Ctrl-C.

    Settings come from configs/<env>.yaml and MUSICGEN_* variables; the options win.

    Example: musicgen-edu serve --port 8000 --env development
    (HTTPS: --tls-certfile cert.pem --tls-keyfile key.pem; API only, on a Redis store:
    MUSICGEN_STORE=redis musicgen-edu serve --workers 0)
    """
    try:
        from ..serve import run_server
    except ImportError as exc:
        fail(f"the service needs its extra: pip install 'musicgen-edu[serve]' ({exc}).")
    settings = _settings(env, model, api_host=host, api_port=port, tls_certfile=tls_certfile,
                         tls_keyfile=tls_keyfile, workers=workers)
    from rich.console import Console

    scheme = "https" if settings.tls_certfile is not None else "http"
    Console(stderr=True).print(f"musicgen_edu service ({settings.env}) on "
                               f"{scheme}://{settings.api_host}:{settings.api_port} — model "
                               f"{settings.default_model}, docs at /docs", highlight=False)
    run_server(settings)


def _settings(env: str | None, model: str | None, **options):
    """The service settings with the options given (None: not given) and ``model`` as the
    default model (added to the ones offered); a bad setting: exit 2 (guard)."""
    from ..settings import load_settings

    overrides = {k: v for k, v in options.items() if v is not None}
    if model is not None:  # the default model must be one the service offers
        base = load_settings(env)
        overrides.update(default_model=model, models=list(dict.fromkeys([model, *base.models])))
    return load_settings(env, **overrides)


@command()
def worker(
    threads: int | None = typer.Option(None, help="Generation threads (setting workers)."),
    port: int | None = typer.Option(None, help="Port of /healthz, /readyz and /metrics "
                                    "(setting worker_port; 0 = none)."),
    model: str | None = typer.Option(None, "--model", "-m",
                                     help="Default model, loaded at start (setting "
                                     "default_model)."),
    env: str | None = typer.Option(None, help="Profile: development or production "
                                   "(default $MUSICGEN_ENV or development)."),
):
    """Run jobs from a shared Redis store, no HTTP API, until SIGTERM (finishes or hands back
    its jobs within shutdown_grace_s).

    Needs MUSICGEN_STORE=redis and MUSICGEN_REDIS_URL, and the same storage_dir (a volume)
    as the API processes (musicgen-edu serve --workers 0).

    Example: musicgen-edu worker --port 8001 (with MUSICGEN_STORE=redis and MUSICGEN_REDIS_URL
    set)
    """
    try:
        from ..serve.worker_process import run_worker
    except ImportError as exc:
        fail(f"the worker needs the service's extra: pip install 'musicgen-edu[serve]' ({exc}).")
    settings = _settings(env, model, workers=threads, worker_port=port)
    if settings.workers < 1:
        fail(f"a worker needs at least one generation thread; got workers={settings.workers} "
             "(--threads or MUSICGEN_WORKERS, 1 to 16).")
    run_worker(settings)


config_app = typer.Typer(help="Inspect the service settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@guard
def config_show(
    env: str | None = typer.Option(None, help="Profile (default $MUSICGEN_ENV or development)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Print the effective settings (file + MUSICGEN_* + defaults), secrets masked.

    Example: musicgen-edu config show --env production --json
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from ..settings import config_path, load_settings

    settings = load_settings(env)                  # a bad setting: exit 2 (guard)
    source = config_path(settings.env)
    values = settings.public()
    if as_json:
        print(json.dumps(values, indent=2))
        return
    table = Table(title=f"settings ({settings.env}; file: {source or 'none'})")
    table.add_column("key", no_wrap=True)
    table.add_column("value")
    table.add_column("environment variable", no_wrap=True)
    for key, value in values.items():
        table.add_row(key, str(value), f"MUSICGEN_{key.upper()}")
    Console().print(table)


# the commands of the command files (measure.py, ...), registered here like the ones above
command()(evaluate)
command()(profile)
command(cls=PairsCommand)(experiments)
command()(train)
command()(convert)
command("install-audiocraft")(install_audiocraft)


def main() -> None:
    """The console-script entry point (``musicgen-edu``, ``python -m musicgen_edu``)."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command (while importing or parsing)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
