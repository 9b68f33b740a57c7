"""``galforge CMD --help`` stays readable in an 80-column terminal.

Rich's option panels put six columns side by side (required mark, long name, short name,
negative name, type, help); at 80 columns the help text of a command with long option
names was squeezed into a column of 15-20 characters. Narrow terminals get plain help.
"""

from __future__ import annotations

import pytest

from galforge.cli import RICH_HELP_MIN_COLUMNS, command, main

BOX = "│╭╮╰╯─"


def _command_paths(cmd, words=()):
    yield list(words)
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _command_paths(sub, (*words, name))


COMMANDS = [" ".join(w) for w in _command_paths(command(columns=80))]


def _help(words: list[str], columns: int, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    assert main([*words, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip(), words
    return out


def _help_text_columns(text: str) -> list[tuple[int, str]]:
    """(width left for the help text, line) for each wrapped line of an option's help.

    A wrapped line is one indented by at least 8 columns (after removing panel borders)
    inside an Arguments/Options section; its indentation is where the help column starts.
    """
    rows = []
    in_options = False
    for raw in text.splitlines():
        line = raw.translate({ord(c): " " for c in BOX}).rstrip()
        title = line.strip()
        if title in ("Arguments", "Options", "Arguments:", "Options:"):
            in_options = True
            continue
        if title in ("Commands", "Commands:") or (line and not line[0].isspace()):
            in_options = line.strip() in ("Arguments:", "Options:")
            continue
        if in_options and line.strip():
            indent = len(line) - len(line.lstrip())
            if indent >= 8:
                rows.append((80 - indent, raw))
    return rows


@pytest.mark.parametrize("words", COMMANDS)
def test_help_at_80_columns_is_readable(words, capsys, monkeypatch):
    out = _help(words.split(), 80, capsys, monkeypatch)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, words
    assert "Usage: galforge" in out
    narrow = [line for width, line in _help_text_columns(out) if width < 30]
    assert not narrow, f"`galforge {words} --help`: help column under 30 characters:\n" + "\n".join(
        narrow
    )


@pytest.mark.parametrize("words", ["", "train", "evaluate", "data prepare"])
def test_help_names_every_option(words, capsys, monkeypatch):
    """Plain help loses nothing: every option of the command is listed."""
    cmd = command(columns=80)
    for word in words.split():
        cmd = cmd.commands[word]
    out = _help(words.split(), 80, capsys, monkeypatch)
    for param in cmd.params:
        for opt in param.opts:
            if opt.startswith("-"):
                assert opt in out, (words, opt)


def test_command_lists_show_whole_first_paragraph(capsys, monkeypatch):
    """At 80 columns the command list wraps each summary instead of cutting it with '...'."""
    out = _help([], 80, capsys, monkeypatch)
    commands = out.split("Commands:")[1]
    assert "..." not in commands
    for name in ("train", "generate", "field", "evaluate", "data", "pretrained"):
        assert f"  {name} " in commands


def test_wide_terminals_keep_rich_panels(capsys, monkeypatch):
    columns = RICH_HELP_MIN_COLUMNS + 20
    out = _help(["train"], columns, capsys, monkeypatch)
    assert "╭─ Options" in out
    assert max(len(line) for line in out.splitlines()) <= columns
    out = _help(["train"], RICH_HELP_MIN_COLUMNS - 1, capsys, monkeypatch)
    assert "╭" not in out and "Options:" in out
