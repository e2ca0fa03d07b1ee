"""What every ``musicgen-edu`` command shares: exit codes, errors, notices and table output.

The bottom of the command line (see the diagram in ``cli/__init__.py``): the app and every
command file import this one, and it imports none of them.

A command is wrapped in :func:`guard`: a :class:`~musicgen_edu.errors.MusicGenEduError` prints as
one red paragraph on stderr (exit code 2) instead of a traceback, Ctrl-C exits with 130.
"""

from __future__ import annotations

import functools
import sys

import typer

from ..errors import ConfigError, MusicGenEduError

__all__ = ["EXIT_OK", "EXIT_FAILED_ROWS", "EXIT_ERROR", "EXIT_INTERRUPTED", "fail", "guard",
           "notice", "emit"]

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
