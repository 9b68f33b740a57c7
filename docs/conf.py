"""Sphinx configuration of galforge's documentation (``make docs``).

The pages are Markdown (myst-parser); the Python API pages are autodoc of the docstrings;
the command reference is written at build time from the typer app by typer's own
``utils docs`` command (``cli_reference.py``), so it always matches ``galforge --help``.
Nothing needs the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from galforge import __version__  # noqa: E402

project = "galforge"
author = "the galforge authors"
copyright = "galforge authors, BSD-3-Clause"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]
templates_path: list[str] = []

# Markdown: ``## Heading`` gets an anchor that links like ``page.md#heading`` resolve to.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Docstrings are numpy style or plain reST prose.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

# "--out" stays two hyphens in prose (no en dash), quotes stay straight
smartquotes = False

html_theme = "alabaster"
html_title = f"galforge {release}"
html_static_path: list[str] = []


# The command reference, written from the typer app before the pages are read.
sys.path.insert(0, str(HERE))
from cli_reference import write_cli_reference  # noqa: E402

write_cli_reference(HERE / "_generated" / "cli.md")
