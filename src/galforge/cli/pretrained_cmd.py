"""``galforge pretrained``: the models shipped with galforge (``pretrained:NAME``)."""

from __future__ import annotations

import json

import typer


def _minutes(card) -> str:
    t = card.training or {}
    cpu = t.get("cpu_hours")
    return f"{cpu:.2f} CPU-h" if isinstance(cpu, int | float) else "–"


def register(app: typer.Typer) -> None:
    """Add the ``pretrained`` command group to ``app``."""
    group = typer.Typer(help="Pretrained models shipped with galforge (use as pretrained:NAME).",
                        no_args_is_help=True)
    app.add_typer(group, name="pretrained")

    @group.command("list")
    def list_models(
        as_json: bool = typer.Option(False, "--json", help="Print the model cards as JSON."),
    ) -> None:
        """List the shipped models: data, config, training steps and CPU time, evaluation."""
        from rich.console import Console
        from rich.table import Table

        from galforge.pretrained import cards

        found = cards()
        if as_json:
            typer.echo(json.dumps([{"name": c.name, "title": c.title, "family": c.family,
                                    "model": c.model, "config": c.config, "data": c.data,
                                    "bands": c.bands, "units": c.units,
                                    "training": c.training, "evaluation": c.evaluation}
                                   for c in found], indent=2))
            return
        if not found:
            typer.echo("no pretrained models are installed")
            return
        table = Table(title="galforge pretrained models (use as pretrained:NAME)")
        for col in ("name", "data", "model / config", "steps", "CPU time", "evaluation"):
            table.add_column(col)
        for c in found:
            t = c.training or {}
            bands = " ".join(c.bands)
            table.add_row(c.name, f"{c.data} [{bands}, {c.units}]", f"{c.model} / {c.config}",
                          str(t.get("steps", "–")), _minutes(c), c.summary_line())
        Console(width=max(160, Console().width)).print(table)

    @group.command("show")
    def show(name: str = typer.Argument(..., help="Model name (as in `galforge pretrained list`).")
             ) -> None:
        """Print one model card in full."""
        from galforge.pretrained import CARD_FILE, model_dir

        typer.echo((model_dir(name) / CARD_FILE).read_text().rstrip())
        typer.echo(f"bundle: {model_dir(name)}")
