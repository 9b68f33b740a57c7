"""Atomic file writes: every file galforge writes appears whole or not at all.

A crash (or a kill) in the middle of a write leaves the previous file in place, never a
truncated one: the bytes go to a uniquely named temporary file in the same folder (safe
with several threads or processes writing beside each other), are flushed to disk, and the
temporary file is renamed over the target.  :func:`atomic_file` is the one way to do it for
a file (whatever writes the bytes), :func:`atomic_folder` for a folder of files such as a
checkpoint; a full disk is :class:`galforge.errors.DiskFullError` (one line), and the
temporary file or folder is removed (:func:`remove_temp`).  The file gets the permissions an ordinary
``open()`` would give it (``0666`` less the process umask), so a bundle written with umask
022 can be read by collaborators.

:func:`check_output_path` tells, before any work is done, whether an output path can be
written at all (a parent that is a file, a read-only folder), naming the option.  Which
outputs galforge may replace or remove, and the locks of output folders, are
:mod:`galforge.outputs`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from galforge.errors import ConfigError, DiskFullError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible, so no other thread sees it change)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new regular file: what ``open()`` would give (0666 less the umask)."""
    return 0o666 & ~current_umask()


def make_temp_file(path: str | Path) -> tuple[int, Path]:
    """A new temporary file beside ``path`` (same folder, unique name, mode of :func:`file_mode`).

    Returns ``(fd, temp_path)``; rename it over ``path`` with :func:`os.replace` when done.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the OS saying the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def remove_temp(path: str | Path) -> None:
    """Remove a temporary file or folder galforge made (missing is fine; errors ignored)."""
    import shutil

    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


@contextlib.contextmanager
def atomic_file(path: str | Path, *, fsync: bool = True):
    """Context manager: yield a temporary path beside ``path``; rename it over ``path`` on success.

    The one way galforge writes a file atomically: whatever writes the temporary file (bytes,
    a memory map, a FITS writer), it appears under ``path`` whole or not at all.  On any
    error the temporary file is removed; a full disk becomes :class:`DiskFullError`.
    """
    path = Path(path)
    try:
        fd, tmp = make_temp_file(path)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        remove_temp(tmp)
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise
    except BaseException:
        remove_temp(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path):
    """Context manager: yield a temporary folder beside ``path``; swap it in on success.

    The earlier folder (if any) is kept as ``.<name>.old`` until the new one is in place, so
    that a crash at any moment leaves one complete folder (``path`` or its ``.old`` copy).
    On any error the temporary folder is removed; a full disk becomes :class:`DiskFullError`.
    """
    path = Path(path)
    parent = path.parent
    tmp = parent / f".{path.name}.tmp-{os.getpid()}"
    old = parent / f".{path.name}.old"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_temp(tmp)
        tmp.mkdir()
        yield tmp
        remove_temp(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        remove_temp(old)
    except OSError as exc:
        remove_temp(tmp)
        if is_disk_full(exc):
            raise DiskFullError(getattr(exc, "filename", None) or path) from None
        raise
    except BaseException:
        remove_temp(tmp)
        raise


def reserve_space(path: str | Path) -> None:
    """Allocate the disk blocks of a (sparse) file now: a full disk raises ENOSPC here, not
    as a crash when a memory map touches a page later.  A no-op where unsupported."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if is_disk_full(exc):
                    raise
    finally:
        os.close(fd)


def publish(done: str | Path, path: str | Path) -> Path:
    """Give a finished file (written elsewhere on the same disk, e.g. in a progress folder)
    its final name ``path`` in one rename."""
    os.replace(done, path)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; return the path."""
    path = Path(path)
    with atomic_file(path, fsync=False) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, **kw) -> Path:
    """Write UTF-8 ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def atomic_write_json(path: str | Path, obj: Any, *, sort_keys: bool = False, **kw) -> Path:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n", **kw)


def check_output_path(path: str | Path, option: str = "--out") -> Path:
    """Raise ConfigError (naming ``option``) when ``path`` cannot be created or written.

    ``path`` is a file or folder to be written; it need not exist.  The nearest existing
    ancestor must be a writable folder (a file in the way, or a read-only folder, is refused
    before any work starts).
    """
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise ConfigError(
            f"{option} {path}: {probe} is a file, not a folder; choose another {option}"
        )
    target = probe if probe.is_dir() else probe.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {path}: the folder {target} is not writable; choose another {option}"
        )
    if path.exists() and path.is_file() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: the file is read-only; choose another {option}")
    return path
