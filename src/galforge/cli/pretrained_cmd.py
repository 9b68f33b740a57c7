"""``galforge pretrained``: the models shipped with galforge (``pretrained:NAME``)."""

from __future__ import annotations

import json

import typer


def _minutes(card) -> str:
    t = card.training or {}
    cpu = t.get("cpu_hours")
    return f"{cpu:.2f} CPU-h" if isinstance(cpu, int | float) else "–"


def card_text(card, folder, width: int = 100) -> str:
    """A model card as a person reads it: what, data, training, evaluation, how to rebuild."""
    import textwrap

    from galforge.bundle import BUNDLE_JSON

    def rows(label: str, text: str) -> list[str]:
        return textwrap.wrap(
            str(text), width=width, initial_indent=f"  {label:<11} ", subsequent_indent=" " * 14
        ) or [f"  {label}"]

    scale = None
    try:
        meta = json.loads((folder / BUNDLE_JSON).read_text())
        scale = ((meta.get("config") or {}).get("data") or {}).get("pixel_scale")
    except (OSError, ValueError, AttributeError):
        pass
    lines = [f"{card.name} — {card.title}".rstrip(" —")]
    lines += rows(
        "model",
        f"{card.model or card.family} (family {card.family}, config {card.config or 'default'})",
    )
    lines += rows("data", card.data)
    size = "×".join(str(s) for s in card.image_size or []) or "?"
    pixel = f', {scale}"/px' if isinstance(scale, (int, float)) else ""
    lines += rows(
        "images", f"bands {' '.join(card.bands)} in {card.units or '?'}; {size} px{pixel}"
    )
    t = card.training or {}
    if t:
        parts = [
            f"{t['steps']} steps" if "steps" in t else "",
            f"batch {t['batch']}" if "batch" in t else "",
            _minutes(card) if "cpu_hours" in t else "",
            f"seed {t['seed']}" if "seed" in t else "",
        ]
        machine = card.extra.get("machine")
        text = ", ".join(p for p in parts if p) + (f" on {machine}" if machine else "")
        lines += rows("training", text)
        if t.get("settings"):
            lines += rows("settings", ", ".join(map(str, t["settings"])))
    ev = card.evaluation or {}
    text = card.summary_line()
    if ev.get("held_out") or ev.get("n_real"):
        text += f" on {ev.get('n_real', '?')} held-out images ({ev.get('held_out', '?')})"
    if ev.get("date"):
        text += f", {ev['date']}"
    lines += rows("evaluation", text)
    for item in ev.get("summary") or []:
        if isinstance(item, dict) and item.get("passed") is False:
            value = item.get("value")
            shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
            lines += rows(
                "  fails", f"{item.get('measure', '?')} = {shown} (needs {item.get('rule', '?')})"
            )
    for key in ("reproduce", "notes"):
        if card.extra.get(key):
            lines += rows(key, card.extra[key])
    if card.description:
        lines += rows("about", card.description)
    lines += rows("bundle", f"{folder} (use as pretrained:{card.name})")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the ``pretrained`` command group to ``app``."""
    group = typer.Typer(
        help="Pretrained models shipped with galforge (use as pretrained:NAME).",
        no_args_is_help=True,
    )
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
            typer.echo(
                json.dumps(
                    [
                        {
                            "name": c.name,
                            "title": c.title,
                            "family": c.family,
                            "model": c.model,
                            "config": c.config,
                            "data": c.data,
                            "bands": c.bands,
                            "units": c.units,
                            "training": c.training,
                            "evaluation": c.evaluation,
                        }
                        for c in found
                    ],
                    indent=2,
                )
            )
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
            table.add_row(
                c.name,
                f"{c.data} [{bands}, {c.units}]",
                f"{c.model} / {c.config}",
                str(t.get("steps", "–")),
                _minutes(c),
                c.summary_line(),
            )
        Console(width=max(160, Console().width)).print(table)

    @group.command("show")
    def show(
        name: str = typer.Argument(..., help="Model name (as in `galforge pretrained list`)."),
        as_json: bool = typer.Option(False, "--json", help="Print the raw card.json instead."),
    ) -> None:
        """Print one model card: data, training, evaluation (failed measures named), notes."""
        from galforge.pretrained import CARD_FILE, card, model_dir

        folder = model_dir(name)
        if as_json:
            typer.echo((folder / CARD_FILE).read_text().rstrip())
            return
        typer.echo(card_text(card(name), folder))
