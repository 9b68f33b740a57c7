"""The pretrained model zoo: bundles shipped inside the package, usable offline.

Each model is a folder ``galforge/pretrained/<NAME>/`` holding an ordinary bundle
(``bundle.json`` + its safetensors) and ``card.json``, the model card: the data it was
trained on, the recipe and config, seed, steps, CPU time, and the evaluation summary of
``galforge evaluate`` against held-out data, with its date.  Every model is reproducible by
``scripts/zoo/<NAME>.py``.

``pretrained:NAME`` is accepted wherever a run or bundle folder is (``galforge generate``,
``field``, ``evaluate``, ``galforge.load``): :func:`resolve` turns it into the folder.
Nothing is ever downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from galforge.errors import BundleError

PREFIX = "pretrained:"
ZOO_DIR = Path(__file__).resolve().parent
CARD_FILE = "card.json"


@dataclass
class ModelCard:
    """What ``card.json`` says of a shipped model (``extra`` keeps every other key)."""

    name: str
    title: str = ""
    family: str = ""
    model: str = ""
    config: str = ""
    data: str = ""
    bands: list[str] = field(default_factory=list)
    units: str = ""
    image_size: list[int] | None = None
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    description: str = ""
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__ if f not in ("path", "extra")}
        kw = {k: d[k] for k in known if k in d}
        return cls(**kw, path=path, extra={k: v for k, v in d.items() if k not in known})

    def summary_line(self) -> str:
        """``12/13 measures pass, FGD 21.3 (real-vs-real 9.1)`` (or "not evaluated")."""
        ev = self.evaluation or {}
        if "passed" not in ev or "total" not in ev:
            return "not evaluated"
        text = f"{ev['passed']}/{ev['total']} measures pass"
        if ev.get("fgd") is not None:
            text += f", FGD {ev['fgd']:.1f}"
            if ev.get("fgd_real_vs_real") is not None:
                text += f" (real-vs-real {ev['fgd_real_vs_real']:.1f})"
        return text


def is_pretrained(source) -> bool:
    """True for a ``pretrained:NAME`` string."""
    return isinstance(source, str) and source.startswith(PREFIX)


def names() -> list[str]:
    """Names of the shipped models (folders with a model card and a bundle)."""
    return sorted(
        p.name
        for p in ZOO_DIR.iterdir()
        if p.is_dir() and (p / CARD_FILE).is_file() and (p / "bundle.json").is_file()
    )


def model_dir(name: str) -> Path:
    """The bundle folder of shipped model ``name``; BundleError listing the known ones."""
    name = name[len(PREFIX) :] if is_pretrained(name) else name
    known = names()
    if name not in known:
        listing = ", ".join(known) if known else "none are installed"
        raise BundleError(
            f"{PREFIX}{name}: no such pretrained model; known: {listing} "
            "(see `galforge pretrained list`)"
        )
    return ZOO_DIR / name


def resolve(source):
    """``pretrained:NAME`` -> the shipped bundle folder; anything else is returned unchanged."""
    return model_dir(source) if is_pretrained(source) else source


def card(name: str) -> ModelCard:
    """The model card of shipped model ``name``."""
    folder = model_dir(name)
    try:
        data = json.loads((folder / CARD_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder / CARD_FILE}: unreadable model card ({exc})") from exc
    return ModelCard.from_dict(data, path=folder)


def cards() -> list[ModelCard]:
    """Model cards of every shipped model, by name."""
    return [card(n) for n in names()]
