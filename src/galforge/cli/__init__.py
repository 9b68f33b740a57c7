"""The ``galforge`` command line: data | train | export | generate | field | evaluate |
score | baseline | pretrained | demo.

Each command group lives in its own module and adds itself to :data:`app` through
``register(app)``. User errors (:class:`galforge.errors.GalforgeError`) are printed as one
line without a traceback and end the command with exit status 2; so are usage errors
(unknown option, missing argument, a value of the wrong type) and files that cannot be
written. An interrupted ``train`` or ``field`` (SIGINT/SIGTERM) ends with 130/143.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import re
import shutil
import sys

import typer

from galforge import __version__
from galforge.errors import GalforgeError, Interrupted

COMMAND_MODULES = (
    "data_cmd",
    "train_cmd",
    "generate_cmd",
    "latent_cmd",
    "field_cmd",
    "evaluate_cmd",
    "score_cmd",
    "pretrained_cmd",
    "demo_cmd",
    "baseline_cmd",
)

app = typer.Typer(
    name="galforge",
    help="Train GANs on galaxy images, generate galaxies and deep fields, validate them physically.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"galforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """galforge: generative models of galaxies, in physical units."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"galforge.cli.{_name}").register(app)


#: Terminals narrower than this get plain help (click's layout: each option with its help
#: wrapped beside it, or on the next lines under a long option) instead of rich's panels,
#: whose six-column option tables leave the help text a column of 15-20 characters at 80.
RICH_HELP_MIN_COLUMNS = 100


def terminal_columns() -> int:
    """The width help is formatted for: ``COLUMNS``, else the terminal's, else 80.

    ``TERMINAL_WIDTH`` (typer's cap on the width of rich help) narrows it further.
    """
    columns = shutil.get_terminal_size((80, 24)).columns
    cap = os.environ.get("TERMINAL_WIDTH", "")
    if cap.isdigit() and int(cap) > 0:
        columns = min(columns, int(cap))
    return columns


def command(columns: int | None = None):
    """The click command of :data:`app`, its help formatted for ``columns`` (default: the terminal's).

    At ``columns < RICH_HELP_MIN_COLUMNS`` every command and group prints plain help.
    """
    cmd = typer.main.get_command(app)
    if (terminal_columns() if columns is None else columns) < RICH_HELP_MIN_COLUMNS:
        stack = [cmd]
        while stack:
            node = stack.pop()
            node.rich_markup_mode = None
            if not node.short_help and node.help:  # whole first paragraph in command lists
                node.short_help = " ".join(inspect.cleandoc(node.help).split("\n\n")[0].split())
            stack.extend(getattr(node, "commands", {}).values())
    return cmd


def _usage_error_class() -> type[Exception]:
    """The base class of the usage errors typer raises.

    typer < 0.20 raises click's exceptions, newer typer its own copy of click's; both are the
    ``ClickException`` ancestor of ``typer.BadParameter``.
    """
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    return typer.BadParameter


_PYDANTIC_WORDING = (
    (
        r"Input should be a valid integer, unable to parse string as an integer",
        "expected a whole number",
    ),
    (r"Input should be a valid number, unable to parse string as a number", "expected a number"),
    (r"Input should be a valid boolean, unable to interpret input", "expected true or false"),
)


def _command_words(argv: list[str]) -> list[str]:
    """The command and sub-command names at the start of ``argv`` (``["data", "prepare"]``)."""
    cmd = typer.main.get_command(app)
    words = []
    for token in argv:
        sub = getattr(cmd, "commands", {}).get(token)
        if sub is None:
            break
        words.append(token)
        cmd = sub
    return words


def usage_line(exc: Exception, argv: list[str] | None = None) -> str:
    """One line for a usage error (unknown option, missing argument, value of the wrong type)."""
    msg = " ".join(str(exc.format_message()).split())
    for pattern, text in _PYDANTIC_WORDING:
        msg = re.sub(pattern, text, msg)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) if ctx is not None else None
    words = path.split()[1:] if path else _command_words(list(argv or []))
    command = " ".join(["galforge", *words])
    return f"{command}: {msg} (see `{command} --help`)"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status.

    0 ok; 2 user error (one line on stderr, no traceback); 130/143 interrupted by
    SIGINT/SIGTERM (see :mod:`galforge.interrupt`).
    """
    usage_error = _usage_error_class()
    if argv is None:
        argv = sys.argv[1:]
    from galforge import outputs
    from galforge.log import configure_cli

    configure_cli()  # galforge's log records: one line each on stderr
    outputs.set_command(argv)
    done = False
    try:
        status = command().main(args=argv, prog_name="galforge", standalone_mode=False)
        done = True
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        return exc.exit_code
    except GalforgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("aborted (interrupted)", err=True)
        return 130
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # the help text of the command group
            return 0
        typer.echo(f"error: {usage_line(exc, argv)}", err=True)
        return 2
    except OSError as exc:
        if os.environ.get("GALFORGE_DEBUG"):
            raise
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        return 2
    finally:  # record what the command wrote in its outputs' manifests; release their locks
        outputs.close_all(failed=not done)
    if isinstance(status, int) and not isinstance(status, bool) and status:
        # typer turns a KeyboardInterrupt into the status 130 instead of raising it
        if status == 130:
            typer.echo("aborted (interrupted)", err=True)
        return status
    return 0


def os_error_line(exc: OSError) -> str:
    """One line for a file that cannot be read or written (permission, missing folder, ...)."""
    what = exc.strerror or type(exc).__name__
    names = [n for n in (exc.filename, exc.filename2) if n]
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" {names[-1]}" if names else ""
        return f"disk full while writing{where}; free space and run the command again"
    if names:
        return (
            f"{' -> '.join(map(str, names))}: {what.lower()}; check the path and its "
            "permissions (or choose another --out)"
        )
    return f"{what}; check the paths and free disk space"


def entry() -> None:
    sys.exit(main())
