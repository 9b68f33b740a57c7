"""The documentation build's inputs: the command reference and the Sphinx configuration.

``make docs`` builds the pages themselves (and fails on any warning); these checks are the
cheap part: the generated command reference names every command and option, and every
extension docs/conf.py asks for is installed with the ``docs`` extra.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from galforge.cli import command

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _cli_reference_module():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(cmd, words=("galforge",)):
    yield " ".join(words), cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*words, name))


def test_cli_reference_names_every_command_and_option(tmp_path):
    pytest.importorskip("typer.cli")
    out = _cli_reference_module().write_cli_reference(tmp_path / "cli.md")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## `galforge`\n")
    for path, cmd in _commands(command(columns=80)):
        assert f"# `{path}`\n" in text, path
        section = text.split(f"# `{path}`\n", 1)[1].split("\n#", 1)[0]
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in section, (path, opt)
    # command lists carry each command's whole summary, not typer's 45-character cut
    assert "* `train`: Train a GAN on galaxy images; writes checkpoints, samples, logs" in text


def test_whole_summaries_uses_the_commands_own_paragraph():
    text = "\n".join([
        "## `galforge`", "", "Top.", "", "**Commands**:", "",
        "* `score`: Realism scorer: fit on...", "",
        "## `galforge score`", "", "Realism scorer: fit on scored images,", "predict scores.", "",
        "**Commands**:", "", "* `fit`: Fit a...", "",
        "### `galforge score fit`", "", "Fit a realism scorer.", "",
    ])  # fmt: skip
    lines = _cli_reference_module().whole_summaries(text).split("\n")
    assert "* `score`: Realism scorer: fit on scored images, predict scores." in lines
    assert "* `fit`: Fit a realism scorer." in lines


def test_sphinx_extensions_are_installed():
    tree = ast.parse((DOCS / "conf.py").read_text(encoding="utf-8"))
    extensions = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "extensions"
    )
    assert "sphinx.ext.autodoc" in extensions and "myst_parser" in extensions
    pytest.importorskip("sphinx")
    for name in extensions:
        importlib.import_module(name)
