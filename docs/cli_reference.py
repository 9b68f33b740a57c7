"""Write the command reference (Markdown) from galforge's typer app.

typer's own ``typer galforge.cli utils docs`` writes one section per command with its usage,
arguments and options; this module runs it and lets each command list show the command's
whole summary (typer cuts it at about 45 characters). ``docs/conf.py`` calls
:func:`write_cli_reference` before Sphinx reads the pages. Run by hand:
``python docs/cli_reference.py OUT.md``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
HEADING = re.compile(r"^#+ `(galforge(?: [\w-]+)*)`$")


def write_cli_reference(out: Path) -> Path:
    """Write the reference of every ``galforge`` command and option to ``out``; return it.

    The app's own heading (``# `galforge```) becomes a section (``##``): the page that
    includes the file has the title.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COLUMNS="100")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "typer", "galforge.cli", "utils", "docs",
               "--name", "galforge", "--output", str(out)]  # fmt: skip
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    text = out.read_text(encoding="utf-8").replace("# `galforge`\n", "## `galforge`\n", 1)
    out.write_text(whole_summaries(text), encoding="utf-8")
    return out


def whole_summaries(text: str) -> str:
    """Command lists with each command's whole summary instead of its first ~45 characters.

    The summary is the paragraph under the command's own heading (``## `galforge train```).
    """
    lines = text.split("\n")
    summary: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and i + 2 < len(lines) and lines[i + 2] and not lines[i + 2].startswith("*"):
            end = lines.index("", i + 2) if "" in lines[i + 2 :] else len(lines)
            summary[m.group(1)] = " ".join(lines[i + 2 : end])
    group = "galforge"
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m:
            group = m.group(1)
            continue
        item = re.match(r"^\* `([\w-]+)`: ", line)
        path = f"{group} {item.group(1)}" if item else ""
        if path in summary:
            lines[i] = f"* `{item.group(1)}`: {summary[path]}"
    return "\n".join(lines)


if __name__ == "__main__":
    print(write_cli_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "cli.md")))
