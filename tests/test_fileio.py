"""Atomic writes: whole files only, with the permissions the umask allows."""

from __future__ import annotations

import os
import stat

import pytest

from galforge.errors import ConfigError
from galforge.fileio import atomic_write_bytes, atomic_write_json, check_output_path


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, mode):
    umask(mask)
    p = atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert stat.S_IMODE(p.stat().st_mode) == mode
    q = atomic_write_json(tmp_path / "sub" / "b.json", {"x": 1})
    assert stat.S_IMODE(q.stat().st_mode) == mode
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_replacing_keeps_whole_files(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.txt"]


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--fits .*is a file, not a folder"):
        check_output_path(blocker / "out.fits", "--fits")
