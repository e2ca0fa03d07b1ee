"""The ``musicgen-edu`` command line (typer + rich): ``generate``, ``prompt``, ``batch``, ``info``,
``serve`` and ``config show``.

A thin caller of :class:`~musicgen_edu.generator.MusicGenerator`: it validates nothing itself
beyond paths, so the CLI and notebooks share one set of rules and error messages. Errors of
the package print as one red paragraph (exit code 2), never as a traceback.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import List, Optional

import typer

from .errors import MusicGenEduError

__all__ = ["app", "main"]

app = typer.Typer(help="Generate music with MusicGen and inspect your set-up.",
                  no_args_is_help=True, add_completion=False)


def _targets(output: Path, count: int) -> list[Path]:
    """Where ``Generation.save`` will write: ``out.wav`` or ``out_0.wav, out_1.wav, ...``."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


@app.command()
def generate(
    prompts: List[str] = typer.Argument(..., help="One or more text prompts (batched together)."),
    duration: float = typer.Option(8.0, "--duration", "-d", help="Seconds per clip (long form past 30)."),
    model: str = typer.Option("debug", "--model", "-m", help="'debug' (offline), a hub id or a folder."),
    output: Path = typer.Option(Path("musicgen.wav"), "--output", "-o", help="File to write (.wav/.flac/.ogg/.mp3)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (item i uses seed + i)."),
    top_k: int = typer.Option(250, help="Top-k filter, 0 = off."),
    top_p: float = typer.Option(0.0, help="Nucleus filter, 0 = off."),
    temperature: float = typer.Option(1.0, help="Softmax temperature (> 0)."),
    guidance_scale: float = typer.Option(3.0, "--guidance-scale", "--cfg", help="Classifier-free guidance, 1 = off."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative", help="Steer away from this text."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    backend: str = typer.Option("native", help="native (fast), native-int8 or transformers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Generate music from text and write it to a file (atomically)."""
    from rich.console import Console

    from .generator import MusicGenerator

    console = Console()
    targets = _targets(output, len(prompts))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:  # refuse before spending minutes on generation
        _fail(f"{', '.join(existing)} already exist(s); pass --overwrite or choose another --output.")
    try:
        gen = MusicGenerator(model, device=device, dtype=dtype, backend=backend, progress=progress)
        result = gen.generate(prompts, duration=duration, seed=seed, top_k=top_k, top_p=top_p,
                              temperature=temperature, guidance_scale=guidance_scale,
                              negative_prompt=negative_prompt)
        paths = result.save(output, overwrite=overwrite)
    except MusicGenEduError as err:
        _fail(str(err))
    console.print(f"[green]{result.summary()}[/]", highlight=False)
    for path in paths:
        console.print(f"wrote [bold]{path.resolve()}[/]", highlight=False)


@app.command()
def batch(
    source: Path = typer.Argument(..., help="CSV or JSONL of rows: prompt, duration, seed, ..."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the clips and manifest."),
    model: str = typer.Option("debug", "--model", "-m", help="'debug' (offline), a hub id or a folder."),
    resume: bool = typer.Option(False, "--resume", help="Skip items already in the manifest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate and replace files."),
    max_batch_size: int = typer.Option(8, help="Largest batch (halved on out-of-memory)."),
    executor: str = typer.Option("local", help="local, or ray (pip install musicgen-edu[ray])."),
    workers: Optional[int] = typer.Option(None, help="Ray actors (default: one per GPU)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    backend: str = typer.Option("native", help="native (fast), native-int8 or transformers."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Generate every row of a table into a folder, with a manifest; resumable."""
    from rich.console import Console

    from .batch import run_batch

    try:
        table = run_batch(source, output, model=model, resume=resume, max_batch_size=max_batch_size,
                          executor=executor, overwrite=overwrite, progress=progress,
                          num_workers=workers, device=device, dtype=dtype, backend=backend)
    except MusicGenEduError as err:
        _fail(str(err))
    console = Console()
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    resumed = int(table["resumed"].fillna(False).astype(bool).sum()) if "resumed" in table else 0
    console.print(f"{len(table)} rows: {counts.get('ok', 0)} ok ({resumed} resumed), "
                  f"{counts.get('invalid', 0)} invalid, {counts.get('failed', 0)} failed; "
                  f"manifest in {Path(output).resolve()}", highlight=False)
    for row in table[table["status"] != "ok"].itertuples():
        console.print(f"[red]{row.error}[/]", highlight=False)
    raise typer.Exit(code=0 if counts.get("ok", 0) == len(table) else 1)


@app.command()
def prompt(
    text: str = typer.Argument(..., help="The prompt to check."),
    improve: bool = typer.Option(False, "--improve", help="Also print an improved prompt."),
    variations: int = typer.Option(0, "--variations", "-n", help="Also print N variations."),
    seed: int = typer.Option(0, help="Seed for improvements and variations."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Count tokens with this model's tokenizer."),
):
    """Validate a prompt, show its facets, and optionally improve it or vary it."""
    from .prompt import PromptEngineer, prompt_report

    try:
        print(prompt_report(text, improve=improve, variations=variations, seed=seed, model=model))
        ok = PromptEngineer(model).validate(text).ok
    except MusicGenEduError as err:
        _fail(str(err))
    raise typer.Exit(code=0 if ok else 1)


@app.command()
def info():
    """Print versions, the device that 'auto' picks, and the models you can load."""
    import numpy
    import torch
    import transformers
    from rich.console import Console
    from rich.table import Table

    from . import __version__
    from .models import DEBUG_MODELS, HUB_MODELS, RANDOM_MODELS, resolve_device, resolve_dtype

    console = Console()
    dev = resolve_device("auto")
    table = Table(title="musicgen_edu", show_header=False)
    for key, value in [("musicgen_edu", __version__), ("python", platform.python_version()),
                       ("torch", torch.__version__), ("transformers", transformers.__version__),
                       ("numpy", numpy.__version__), ("device (auto)", str(dev)),
                       ("dtype (auto)", str(resolve_dtype("auto", dev))),
                       ("cuda", torch.cuda.get_device_name() if dev.type == "cuda" else "not available")]:
        table.add_row(key, value)
    console.print(table)
    models = Table(title="models")
    for col in ("name", "channels", "melody", "size", "needs"):
        models.add_column(col, no_wrap=(col == "name"))
    for name, (channels, melody) in DEBUG_MODELS.items():
        models.add_row(name, str(channels), str(melody), "~2M (random)", "nothing (offline)")
    for name in RANDOM_MODELS:
        size = HUB_MODELS[name.replace("random", "facebook/musicgen")][2]
        models.add_row(name, "1", "False", f"{size}M (random)", "nothing (offline)")
    for name, (channels, melody, size) in HUB_MODELS.items():
        models.add_row(name, str(channels), str(melody), f"{size}M", "network once")
    console.print(models)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to bind (setting api_host)."),
    port: Optional[int] = typer.Option(None, help="TCP port (setting api_port)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Default model (setting default_model)."),
    env: Optional[str] = typer.Option(None, help="Profile: development or production "
                                      "(default $MUSICGEN_ENV or development)."),
):
    """Run the REST + streaming service (pip install 'musicgen-edu[serve]') until Ctrl-C.

    Settings come from configs/<env>.yaml and MUSICGEN_* variables; the options win.
    """
    try:
        from .serve import run_server
        from .settings import load_settings
    except ImportError as exc:
        _fail(f"the service needs its extra: pip install 'musicgen-edu\\[serve]' ({exc}).")
    overrides = {k: v for k, v in dict(api_host=host, api_port=port).items() if v is not None}
    try:
        if model is not None:  # the default model must be one the service offers
            base = load_settings(env)
            overrides.update(default_model=model, models=list(dict.fromkeys([model, *base.models])))
        settings = load_settings(env, **overrides)
    except MusicGenEduError as err:
        _fail(str(err))
    from rich.console import Console

    Console(stderr=True).print(f"musicgen_edu service ({settings.env}) on "
                               f"http://{settings.api_host}:{settings.api_port} — model "
                               f"{settings.default_model}, docs at /docs", highlight=False)
    run_server(settings)


config_app = typer.Typer(help="Inspect the service settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    env: Optional[str] = typer.Option(None, help="Profile (default $MUSICGEN_ENV or development)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Print the effective settings (file + MUSICGEN_* + defaults), secrets masked."""
    import json

    from rich.console import Console
    from rich.table import Table

    from .settings import config_path, load_settings

    try:
        settings = load_settings(env)
        source = config_path(settings.env)
    except MusicGenEduError as err:
        _fail(str(err))
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


def main() -> None:  # the console-script entry point
    app()


if __name__ == "__main__":
    main()
