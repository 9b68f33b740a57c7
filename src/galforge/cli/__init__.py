"""The ``galforge`` command line: data | train | export | generate | field | evaluate |
pretrained | demo.

Each command group lives in its own module and adds itself to :data:`app` through
``register(app)``. User errors (:class:`galforge.errors.GalforgeError`) are printed as one
line without a traceback and end the command with exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from galforge import __version__
from galforge.errors import GalforgeError

COMMAND_MODULES = ("data_cmd", "train_cmd", "generate_cmd", "field_cmd", "evaluate_cmd",
                   "pretrained_cmd", "demo_cmd")

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
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """galforge: generative models of galaxies, in physical units."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"galforge.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 user error)."""
    try:
        app(args=argv, standalone_mode=False)
    except GalforgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        raise
    return 0


def entry() -> None:
    sys.exit(main())
