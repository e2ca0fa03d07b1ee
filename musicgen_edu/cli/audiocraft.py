"""The audiocraft commands: ``convert`` (checkpoints both ways) and ``install-audiocraft``.

Thin callers of :mod:`musicgen_edu.convert` and :mod:`musicgen_edu.audiocraft_install`,
registered in ``cli/__init__.py`` like ``train``.

``convert SRC DST``: the direction comes from SRC::

    SRC holds state_dict.bin            -> from_audiocraft(SRC, DST, t5=--t5)   transformers
    SRC is a transformers folder, or a  -> to_audiocraft(SRC, DST, t5_name=--t5) audiocraft
        name load_model knows ('debug', 'facebook/musicgen-small', a train run's model/)
    anything else                       -> exit 2, naming the files SRC lacks

DST must be new or empty (``--force`` writes into a full one). A missing file, an unknown
weight, a shape that does not fit or a setting transformers lacks is one red paragraph
(exit 2) naming the key and both shapes, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..convert import CODEC_FILE, LM_FILE, from_audiocraft, is_audiocraft_folder, to_audiocraft
from ..models import DEBUG_MODELS, HUB_MODELS, RANDOM_MODELS
from .common import fail

__all__ = ["convert", "install_audiocraft"]


def _direction(src: str) -> str:
    """``"to-transformers"`` or ``"to-audiocraft"``; exit 2 for a folder that is neither."""
    path = Path(src).expanduser()
    if is_audiocraft_folder(path):
        return "to-transformers"
    if path.is_dir():
        if (path / "config.json").is_file():
            return "to-audiocraft"
        held = sorted(p.name for p in path.iterdir())[:10]
        missing = (f"{LM_FILE} (it has {CODEC_FILE})" if (path / CODEC_FILE).is_file()
                   else f"{LM_FILE} and {CODEC_FILE} (audiocraft) or config.json (transformers)")
        fail(f"{src} is a folder without {missing}; it holds {held or 'nothing'}. Give an "
             "audiocraft folder, a save_pretrained folder or a model name.")
    if src.startswith((".", "/", "~")) or src.count("/") > 1:
        fail(f"{src} does not exist; give an audiocraft or transformers folder, or a model name.")
    if src in DEBUG_MODELS or src in RANDOM_MODELS or src in HUB_MODELS or "/" in src:
        return "to-audiocraft"          # a hub id (owner/name) is checked by load_model
    fail(f"{src!r} is neither a folder nor a model name; known names: "
         f"{', '.join([*DEBUG_MODELS, *RANDOM_MODELS, *HUB_MODELS])}.")
    raise AssertionError  # fail() exits


def convert(
    src: str = typer.Argument(..., help="An audiocraft folder (state_dict.bin + "
                                        "compression_state_dict.bin), a transformers folder "
                                        "(save_pretrained, e.g. a train run's model/) or a model "
                                        "name ('debug', 'facebook/musicgen-small')."),
    dst: Path = typer.Argument(..., help="The folder to write: transformers from an audiocraft "
                                         "SRC, audiocraft (with t5/) from anything else."),
    t5: str | None = typer.Option(None, "--t5",
                                  help="To transformers: the T5 text encoder, a transformers "
                                       "folder or hub name (default SRC/t5, else the name in "
                                       "xp.cfg). To audiocraft: the T5 name written to xp.cfg "
                                       "(default its hub name, e.g. t5-base, or 't5')."),
    trusted: bool = typer.Option(False, "--trusted",
                                 help="Also read audiocraft files that pickle Python objects "
                                      "(weights_only=False); only for files you trust."),
    force: bool = typer.Option(False, "--force", help="Write into DST even if it is not empty."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
):
    """Convert a MusicGen checkpoint between audiocraft and transformers (both ways).

    Example: musicgen-edu convert debug ac/ && musicgen-edu convert ac/ hf/ && musicgen-edu
    generate "calm piano" -m hf/
    """
    direction = _direction(src)
    if dst.exists() and (not dst.is_dir() or (any(dst.iterdir()) and not force)):
        fail(f"{dst} exists and is not an empty folder; choose a new one or pass --force.")
    if dst.resolve() == Path(src).expanduser().resolve():
        fail(f"DST {dst} is SRC; write the conversion to another folder.")
    if direction == "to-transformers":
        out = from_audiocraft(src, dst, t5=t5, trusted=trusted)
        use = f"musicgen-edu generate \"...\" -m {out}"
    else:
        out = to_audiocraft(src, dst, t5_name=t5)
        use = f"audiocraft: MusicGen.get_pretrained('{out}')"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    if as_json:
        print(json.dumps(dict(direction=direction, src=src, dst=str(out.resolve()),
                              files=files, use=use), indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(f"[green]converted {src} -> {out} ({direction})[/]", highlight=False)
    for name in files:
        size = (out / name).stat().st_size
        console.print(f"  {name}  {size / 1e6:.1f} MB", highlight=False, markup=False)
    console.print(f"use it: {use}", highlight=False, markup=False)


def install_audiocraft(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the steps; change nothing."),
):
    """Install audiocraft 1.3.0 into this environment next to its torch (never replaced): the
    audiocraft backend and its tests need it; musicgen_edu itself does not.

    Its pins (torch 2.1, av 11, xformers < 0.0.23) have no wheels for Python 3.11+; this
    installs it without them, with modern wheels of what its code imports.

    Example: musicgen-edu install-audiocraft --dry-run
    """
    from ..audiocraft_install import install_audiocraft as install

    print(install(dry_run=dry_run))
