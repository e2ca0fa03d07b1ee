"""What every ``musicgen-edu`` command shares: exit codes, errors, notices and table output.

The bottom of the command line (see the diagram in ``cli/__init__.py``): the app and every
command file import this one, and it imports none of them.

A command is wrapped in :func:`guard`: a :class:`~musicgen_edu.errors.MusicGenEduError` prints as
one red paragraph on stderr (exit code 2) instead of a traceback, Ctrl-C exits with 130.
:func:`config_option` makes an option of a settings dataclass's field (``GenerationConfig``
for ``generate``, ``TrainConfig`` for ``train``), so its default and range are written once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import typer

from ..errors import ConfigError, MusicGenEduError

__all__ = ["EXIT_OK", "EXIT_FAILED_ROWS", "EXIT_ERROR", "EXIT_INTERRUPTED", "fail", "guard",
           "notice", "emit", "config_option"]

EXIT_OK = 0              # everything asked for was done
EXIT_FAILED_ROWS = 1     # batch / experiments / prompt: some rows, runs or checks failed
EXIT_ERROR = 2           # a MusicGenEduError (bad setting, missing file, ...) or a usage error
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT), as shells report it


def fail(message: str) -> None:
    """Print one red error paragraph on stderr and exit with code 2."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=EXIT_ERROR)


def notice(message: str) -> None:
    """Print a yellow note on stderr (stdout stays clean for ``--format csv > out.csv``)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(message)}[/]", highlight=False)


def guard(command):
    """Run a command with the documented exit codes: 2 for our errors, 130 for Ctrl-C."""
    @functools.wraps(command)
    def guarded(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MusicGenEduError as err:
            fail(str(err))
        except KeyboardInterrupt:
            from rich.console import Console

            Console(stderr=True).print("interrupted (Ctrl-C); files already written are "
                                       "complete (writes are atomic).", highlight=False)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
    return guarded


def config_option(settings: type, name: str, *flags: str, help: str, hint: str | None = None,
                  panel: str | None = None):
    """A typer option for the field ``name`` of the settings dataclass ``settings``.

    The default and the allowed values come from the field and its metadata
    (``generation.ranged``: low, high, low_open, high_open, hint; or ``choices``; a bool or a
    tuple of texts has none), so the CLI, the notebooks, the widgets and the service offer the
    same settings; the dataclass itself checks the value (a bad one is exit code 2 with its
    message). ``help`` says what the setting is, in its units; ``hint`` replaces the field's
    hint where that one speaks of a setting the CLI does not have; ``panel`` groups options
    in ``--help``. A tuple default becomes a list (a repeatable option).

    Example: ``config_option(GenerationConfig, "top_p", help="Nucleus filter.")`` is
    ``--top-p`` with default 0.0 and the help "Nucleus filter. Allowed: [0, 1]. 0 disables
    nucleus filtering."
    """
    field = {f.name: f for f in dataclasses.fields(settings)}[name]
    limits = field.metadata
    hint = limits.get("hint", "") if hint is None else hint
    if "low" in limits:                               # a ranged number
        allowed = (f"{'(' if limits['low_open'] else '['}{limits['low']}, {limits['high']}"
                   f"{')' if limits.get('high_open') else ']'}")
        help = f"{help} Allowed: {allowed}."
    elif "choices" in limits:
        help = f"{help} Allowed: {', '.join(map(str, limits['choices']))}."
    default = list(field.default) if isinstance(field.default, tuple) else field.default
    return typer.Option(default, *flags, help=f"{help} {hint}".rstrip(), rich_help_panel=panel)


def emit(table, fmt: str = "table", columns: list[str] | None = None, title: str | None = None):
    """Print a DataFrame as a rich table (``columns`` only), CSV or JSON records on stdout.

    Args:
        table: the pandas DataFrame to print.
        fmt: ``"table"`` (rich, for people), ``"csv"`` or ``"json"`` (records, for scripts).
        columns: the columns a rich table shows (all of them in CSV and JSON).
        title: the rich table's title.
    """
    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not available; choose table, csv or json.")
    if fmt == "csv":
        table.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        print(table.to_json(orient="records", indent=2, default_handler=str))
    else:
        from rich.console import Console
        from rich.table import Table

        shown = Table(title=title)
        columns = [c for c in (columns or list(table.columns)) if c in table.columns]
        for column in columns:
            shown.add_column(column, no_wrap=column in ("run", "file", "name"))
        for row in table[columns].itertuples(index=False):
            shown.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        Console().print(shown)
