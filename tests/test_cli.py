"""The command line as a whole: every command turns usage errors into one line and exit 2."""

from __future__ import annotations

import inspect

import pytest
import typer.main

from galforge.cli import app, main


def _commands():
    """(command words, callback) of every command and sub-command of the galforge app."""
    out = [([c.name or c.callback.__name__], c.callback) for c in app.registered_commands]
    for group in app.registered_groups:
        for c in group.typer_instance.registered_commands:
            out.append(([group.name, c.name or c.callback.__name__], c.callback))
    return out


def _option_names(words):
    cmd = typer.main.get_command(app)
    for w in words:
        cmd = cmd.commands[w]
    return {p.name: p.opts for p in cmd.params}


COMMANDS = _commands()
NUMERIC = [
    (words, opts[0], hint)
    for words, callback in COMMANDS
    for name, param in inspect.signature(callback, eval_str=True).parameters.items()
    if (hint := param.annotation) in (int, float)
    and (opts := _option_names(words)[name])[0].startswith("-")
]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_every_command_is_walked():
    names = {" ".join(w) for w, _ in COMMANDS}
    assert {
        "train",
        "generate",
        "export",
        "field",
        "evaluate",
        "demo",
        "data prepare",
        "data inspect",
        "mix",
        "interpolate",
        "project",
    } <= names
    assert any(w == ["train"] and o == "--steps" for w, o, _ in NUMERIC)
    assert any(w == ["data", "prepare"] and o == "--limit" for w, o, _ in NUMERIC)


@pytest.mark.parametrize("words", [w for w, _ in COMMANDS], ids=" ".join)
def test_unknown_option_is_one_line(words, capsys):
    rc = main([*words, "--no-such-option"])
    line = _one_line(capsys)
    assert rc == 2
    assert "--no-such-option" in line and f"galforge {' '.join(words)}" in line


@pytest.mark.parametrize(
    "words,option,kind", NUMERIC, ids=[f"{' '.join(w)} {o}" for w, o, _ in NUMERIC]
)
def test_non_numeric_value_is_one_line(words, option, kind, capsys):
    rc = main([*words, option, "ten"])
    line = _one_line(capsys)
    assert rc == 2
    assert option in line
    assert ("whole number" if kind is int else "number") in line


def test_missing_argument_and_option_value(capsys):
    assert main(["train"]) == 2
    assert "Missing argument" in _one_line(capsys)
    assert main(["field", "run", "--size"]) == 2
    line = _one_line(capsys)
    assert "--size" in line and "galforge field" in line
    assert main(["no-such-command"]) == 2
    assert "no-such-command" in _one_line(capsys)


def test_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = main(["data", "prepare", "builtin:galsim?n=2&size=16", "--out", str(blocker / "sub")])
    line = _one_line(capsys)
    assert rc == 2 and "--out" in line and str(blocker) in line
    rc = main(["train", str(tmp_path), "--out", str(blocker / "run"), "--steps", "1"])
    assert rc == 2 and "is a file, not a folder" in _one_line(capsys)


def test_os_errors_become_one_line(tmp_path, capsys, monkeypatch):
    import galforge.cli.data_cmd as data_cmd

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(data_cmd, "check_output_path", refuse)
    rc = main(["data", "prepare", "builtin:galsim?n=2&size=16", "--out", str(tmp_path / "x")])
    line = _one_line(capsys)
    assert rc == 2 and "permission denied" in line and str(tmp_path / "x") in line


def test_builtin_spec_with_a_bad_number(capsys):
    rc = main(["data", "inspect", "builtin:galsim?n=abc"])
    line = _one_line(capsys)
    assert rc == 2 and "n='abc'" in line and "whole number" in line
