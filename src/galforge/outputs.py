"""Owned outputs and run locks: the one rule every galforge command writes by.

**Ownership.**  Every place galforge writes is *owned*: galforge records what it wrote there
and never writes over or deletes anything else.

* An output **folder** (``generate --out``, ``evaluate --out``, a run folder, a bundle, ...)
  holds a small manifest, :data:`MANIFEST` (``.galforge-outputs.json``): the relative paths of
  the files and folders galforge wrote in it and the command that wrote them.  It is rewritten
  atomically whenever outputs are recorded (:meth:`OutputFolder.record`; at least when the
  command ends, and at every checkpoint of a training run).
* A single output **file** (``score predict --out scores.csv``, ``interpolate --out a.gif``,
  ``field --out f.zarr`` / ``--fits`` / ``--preview``) is recorded in the manifest of the
  folder it lies in (:func:`claim_entry`).

Without ``overwrite`` an existing output (a folder holding anything, an existing file) is
refused in one line naming it and ``--overwrite``.  With ``overwrite`` galforge removes only
what the manifest lists, and refuses (one line naming the first foreign entry) when the
place holds anything it did not record: nothing a user put there is ever deleted.  A folder
written by a galforge without manifests is refused the same way.  A run folder being resumed
(``resume=True``) is the run's own: nothing is removed and its unrecorded files are kept
unrecorded unless galforge rewrites them.

**Locks.**  While a process writes a folder it holds an OS lock (``fcntl.flock``) on
:data:`LOCK` (``.galforge.lock``) inside it; the file holds the holder's PID.  The lock dies
with the process (a ``kill -9`` leaves at most a lock file nobody holds, which the next
writer takes over), and a second writer is refused in one line naming the PID.

**Deletions.**  Outputs are removed here only (:func:`remove_path`), and only paths a
manifest lists; a refused command leaves nothing behind (a folder it created is removed
again when nothing was written into it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path

from galforge import __version__
from galforge.errors import ConfigError
from galforge.fileio import atomic_write_json

MANIFEST = ".galforge-outputs.json"
LOCK = ".galforge.lock"
#: galforge's own bookkeeping names: never foreign, never listed
_OWN_NAMES = (MANIFEST, LOCK)
#: temporary files of galforge's atomic writers (``.NAME.XXXXXXXX.tmp``), left by a kill
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
#: lock files of single-file outputs, beside them
_ENTRY_LOCK = re.compile(r"^\..+\.galforge-lock$")

__all__ = [
    "LOCK",
    "MANIFEST",
    "OutputBusy",
    "OutputFolder",
    "adopt",
    "check_folder",
    "claim_entry",
    "claim_folder",
    "close_all",
    "command_line",
    "owning",
    "recorded",
    "remove_entry",
    "remove_path",
    "scope",
    "set_command",
]


class OutputBusy(ConfigError):
    """Another process is writing the same output folder or file (it holds the lock)."""


_COMMAND = {"line": ""}
_OPEN: list = []


def set_command(argv) -> None:
    """Remember the command line recorded in the manifests (the CLI calls this)."""
    _COMMAND["line"] = " ".join(["galforge", *map(str, argv)]) if argv is not None else ""


def command_line() -> str:
    return _COMMAND["line"] or "python: " + " ".join(map(str, sys.argv[:1]))


# ---------------------------------------------------------------------- manifest
def _is_own(name: str) -> bool:
    return name in _OWN_NAMES or bool(_TEMP.match(name)) or bool(_ENTRY_LOCK.match(name))


def read_manifest(folder: Path) -> dict:
    """The manifest of ``folder`` (an empty one when there is none or it cannot be read)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": [], "dirs": []}
    if not isinstance(data, dict):
        return {"files": [], "dirs": []}
    for key in ("files", "dirs"):
        value = data.get(key)
        data[key] = [str(v) for v in value if _inside(v)] if isinstance(value, list) else []
    return data


def _inside(rel) -> bool:
    """Whether a manifest entry names a place inside its folder (never ``..`` or absolute:
    a damaged or hand-edited manifest cannot point galforge at anything outside)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def recorded(folder: Path) -> set[str]:
    """Relative paths (files and folders) the manifest of ``folder`` lists."""
    data = read_manifest(folder)
    return set(data["files"]) | set(data["dirs"])


def _update_manifest(folder: Path, files, dirs, drop=()) -> None:
    """Add ``files``/``dirs`` to (and drop ``drop`` from) the manifest of ``folder``, atomically
    and under a short lock on the folder, so that writers beside each other lose nothing."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read_manifest(folder)
        drop = set(drop)
        new_files = sorted((set(data["files"]) | set(files)) - drop)
        new_dirs = sorted((set(data["dirs"]) | set(dirs)) - drop)
        if (
            new_files == sorted(data["files"])
            and new_dirs == sorted(data["dirs"])
            and (folder / MANIFEST).exists()
        ):
            return
        commands = data.get("commands") if isinstance(data.get("commands"), list) else []
        line = command_line()
        if not commands or commands[-1] != line:
            commands = [*commands, line][-20:]
        atomic_write_json(
            folder / MANIFEST,
            {
                "written_by": "galforge",
                "galforge_version": __version__,
                "commands": commands,
                "files": new_files,
                "dirs": new_dirs,
            },
            fsync=False,
        )
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files, folders) under ``folder``, relative, never following links; galforge's own
    bookkeeping files are left out.  A link (to a file or a folder) counts as a file."""
    files, dirs = [], []
    for root, dnames, fnames in os.walk(folder, followlinks=False):
        rel = os.path.relpath(root, folder)
        prefix = "" if rel == "." else rel + "/"
        for d in list(dnames):
            if os.path.islink(os.path.join(root, d)):
                dnames.remove(d)
                files.append(prefix + d)
            else:
                dirs.append(prefix + d)
        # bookkeeping (locks, temporary files) at any depth; the manifest of this folder
        files.extend(
            prefix + f for f in fnames if not (_is_own(f) and (prefix == "" or f != MANIFEST))
        )
    return files, dirs


def _stat(path: Path):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# ---------------------------------------------------------------------- deletion
def remove_path(path: Path) -> None:
    """Remove one file, link or folder tree (a missing one is fine).  Callers pass only paths
    galforge recorded as its own."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def _covered(rel: str, units: set[str]) -> bool:
    """Whether ``rel`` or a folder above it is recorded as a unit (a file entry)."""
    parts = rel.split("/")
    return any("/".join(parts[:k]) in units for k in range(1, len(parts) + 1))


def _real_parents(base: Path, rel: str) -> bool:
    """Whether every folder between ``base`` and ``base/rel`` is a real folder, not a link
    (a link put in place of a recorded folder is never followed)."""
    p = base
    for part in rel.split("/")[:-1]:
        p = p / part
        if p.is_symlink() or not p.is_dir():
            return False
    return True


def _remove_recorded(base: Path, files, dirs=()) -> None:
    """Remove the recorded ``files`` (relative to ``base``; a folder recorded as a file is a
    unit such as a zarr store, removed whole), then the recorded ``dirs`` left empty,
    deepest first."""
    for rel in sorted(set(files)):
        if _real_parents(base, rel):
            remove_path(base / rel)
    paths = {d for d in dirs if _real_parents(base, d)}
    for rel in sorted(paths, key=lambda r: r.count("/"), reverse=True):
        p = base / rel
        if p.is_dir() and not p.is_symlink():
            for q in p.iterdir():  # stale locks and temporary files of galforge's writers
                if q.is_file() and q.name != MANIFEST and _is_own(q.name):
                    q.unlink(missing_ok=True)
            try:
                p.rmdir()
            except OSError:
                pass  # not empty: holds something else, which stays


def _names(items, limit: int = 3) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# ---------------------------------------------------------------------- locks
class _Lock:
    """An exclusive ``flock`` on ``path`` holding this process's PID; released on close."""

    def __init__(self, path: Path, what: str, option: str):
        self.path = path
        self.fd: int | None = None
        for _ in range(20):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise _busy(path, what, option) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its last holder removed meanwhile
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise OutputBusy(f"{option} {what}: could not take the lock {path}; try again")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still held: a waiter re-checks the inode
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _busy(lock: Path, what: str, option: str) -> OutputBusy:
    """The refusal of a second writer, naming the PID the lock file holds."""
    pid = _read_pid(lock)
    who = f"process {pid}" if pid else "another process"
    return OutputBusy(
        f"{option} {what}: {who} is writing it now (lock {lock.name}); wait for "
        f"it to finish or choose another {option}"
    )


def _read_pid(path: Path) -> int | None:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- folders
class OutputFolder:
    """An output folder this process owns and holds locked until :meth:`close`.

    Use it as a context manager (``with claim_folder(...) as folder:``): on exit the files
    written meanwhile are recorded in the manifest and the lock is released; when the block
    fails before anything was written, a folder the claim created is removed again.
    """

    def __init__(
        self,
        path: Path,
        option: str,
        created: list[Path],
        lock: _Lock,
        before: dict[str, tuple],
        before_dirs: set[str],
    ):
        self.path = path
        self.option = option
        self._created = created
        self._lock = lock
        self._before = before
        self._before_dirs = before_dirs
        _OPEN.append(self)

    @property
    def closed(self) -> bool:
        return self._lock.fd is None

    def record(self) -> None:
        """Record in the manifest what was written in the folder since it was claimed."""
        if not self.path.is_dir():
            return
        files, dirs = _walk(self.path)
        mine = [
            f for f in files if f not in self._before or _stat(self.path / f) != self._before[f]
        ]
        new_dirs = [d for d in dirs if d not in self._before_dirs]
        _update_manifest(self.path, mine, new_dirs)

    def close(self, failed: bool = False) -> None:
        """Record, release the lock; after a failure that wrote nothing, undo the folder."""
        if self.closed:
            return
        try:
            files, dirs = _walk(self.path) if self.path.is_dir() else ([], [])
            if failed and not files and not recorded(self.path):
                # refused before writing anything: leave nothing behind
                for d in sorted(set(dirs) - self._before_dirs, key=len, reverse=True):
                    try:
                        (self.path / d).rmdir()
                    except OSError:
                        pass
                self._lock.release()
                if not recorded(self.path):
                    (self.path / MANIFEST).unlink(missing_ok=True)
                for p in reversed(self._created):
                    try:
                        p.rmdir()
                    except OSError:
                        break
                return
            self.record()
        finally:
            self._lock.release()
            if self in _OPEN:
                _OPEN.remove(self)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def __fspath__(self) -> str:
        return str(self.path)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = []
    p = folder
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def claim_folder(
    folder,
    *,
    overwrite: bool = False,
    option: str = "--out",
    resume: bool = False,
    holds: str = "",
    command: str = "",
    keep=(),
) -> OutputFolder:
    """Make ``folder`` ready for new outputs, locked by this process; return its handle.

    A missing or empty folder is used as it is.  ``resume``: the folder is an earlier run's
    own, kept as it is.  Otherwise a folder holding anything is refused unless ``overwrite``;
    with ``overwrite`` what its manifest lists is removed, and a folder holding anything
    else is refused, naming it.  ``holds`` describes earlier outputs in the messages.
    ``keep``: top-level names of recorded outputs ``overwrite`` keeps (a cache of results
    that stay valid).
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: is a file; give a folder")
    created = _make_folder(folder)
    try:
        lock = _Lock(folder / LOCK, str(folder), option)
    except BaseException:
        for p in reversed(created):
            p.rmdir()
        raise
    try:
        files, dirs = _walk(folder)
        if files or dirs:
            if not resume:
                _check_replaceable(folder, files, dirs, overwrite, option, holds, command)
                listed = read_manifest(folder)
                gone = {
                    k: [p for p in listed[k] if p.split("/")[0] not in set(keep)]
                    for k in ("files", "dirs")
                }
                _remove_recorded(folder, gone["files"], gone["dirs"])
                _update_manifest(folder, [], [], drop=gone["files"] + gone["dirs"])
                files, dirs = _walk(folder)
        before = {f: _stat(folder / f) for f in files}
        if resume:
            mine = recorded(folder)
            before = {f: s for f, s in before.items() if f not in mine}
        handle = OutputFolder(folder, option, created, lock, before, set(dirs))
        _update_manifest(folder, [], [])
        return handle
    except BaseException:
        lock.release()
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise


def adopt(folder, names) -> None:
    """Record the existing files ``names`` of ``folder`` as galforge's, for a folder that has
    no manifest yet and is known to be galforge's (a run's own bundle folder written before
    manifests existed, when the run is continued)."""
    folder = Path(folder)
    if (folder / MANIFEST).exists() or not folder.is_dir():
        return
    _update_manifest(
        folder,
        [
            n
            for n in names
            if _inside(n) and (folder / n).is_file() and not (folder / n).is_symlink()
        ],
        [],
    )


def check_folder(
    folder, *, overwrite: bool = False, option: str = "--out", holds: str = "", command: str = ""
) -> None:
    """Refuse, before any work and without creating anything, a folder :func:`claim_folder`
    would refuse (not empty without ``overwrite``; holding foreign files with it)."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"{option} {folder}: is a file; give a folder")
    _check_not_busy(folder / LOCK, str(folder), option)
    files, dirs = _walk(folder)
    if files or dirs:
        _check_replaceable(folder, files, dirs, overwrite, option, holds, command)


def _check_not_busy(lock: Path, what: str, option: str) -> None:
    """Refuse (naming the holder's PID) when another process holds ``lock`` now."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _busy(lock, what, option) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _check_replaceable(
    folder: Path, files, dirs, overwrite: bool, option: str, holds: str, command: str
) -> None:
    what = holds or _names({p.split("/")[0] for p in [*files, *dirs]})
    if not overwrite:
        cmd = f" {command}" if command else ""
        raise ConfigError(
            f"{option} {folder}: the folder is not empty ({what}); pass --overwrite to replace "
            f"the earlier galforge{cmd} outputs, or choose an empty or new folder"
        )
    listed = read_manifest(folder)
    units, mine = set(listed["files"]), recorded(folder)
    foreign = [p for p in files if not _covered(p, units)] + [
        d for d in dirs if d not in mine and not _covered(d, units)
    ]
    if foreign:
        if not (folder / MANIFEST).exists():
            raise ConfigError(
                f"{option} {folder}: holds files galforge did not record ({_names(foreign)}); "
                "--overwrite removes only what galforge recorded writing there; choose an "
                "empty or new folder"
            )
        raise ConfigError(
            f"{option} {folder}: --overwrite removes only what galforge wrote there, and the "
            f"folder also holds {_names(foreign)}, which galforge did not write; move it away "
            "or choose an empty or new folder"
        )


# ---------------------------------------------------------------------- single outputs
class OutputEntry:
    """A single output (a file, or a folder written as one unit such as a zarr store) this
    process owns and holds locked; its name is recorded in the manifest of the folder it
    lies in as soon as it is claimed."""

    def __init__(self, path: Path, lock: _Lock, created: list[Path], extra: tuple[Path, ...]):
        self.path = path
        self._lock = lock
        self._created = created
        self._extra = extra
        _OPEN.append(self)

    @property
    def closed(self) -> bool:
        return self._lock.fd is None

    def close(self, failed: bool = False) -> None:
        if self.closed:
            return
        self._lock.release()
        if self in _OPEN:
            _OPEN.remove(self)
        paths = (self.path, *self._extra)
        if failed and not any(p.exists() or p.is_symlink() for p in paths):
            # refused or failed before writing: forget the names, remove folders it made
            _update_manifest(self.path.parent, [], [], drop=[p.name for p in paths])
            manifest = self.path.parent / MANIFEST
            if not recorded(self.path.parent) and self._created:
                manifest.unlink(missing_ok=True)
            for p in reversed(self._created):
                try:
                    p.rmdir()
                except OSError:
                    break

    def __enter__(self) -> OutputEntry:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


def entry_owned(path) -> bool:
    """Whether ``path`` is recorded as a galforge output in the manifest of its folder."""
    path = Path(path)
    return path.name in recorded(path.parent)


def claim_entry(
    path,
    *,
    overwrite: bool = False,
    option: str = "--out",
    resume: bool = False,
    extra=(),
    hint: str = "",
) -> OutputEntry:
    """Make the single output ``path`` (and the ``extra`` paths beside it written with it, such
    as a progress folder) ready to be written, locked by this process; return its handle.

    An existing one is refused unless ``overwrite``; with ``overwrite`` it is removed when
    the manifest beside it records it as galforge's and refused otherwise.  ``resume``: an
    existing one recorded as galforge's is kept as it is (the caller continues it).  ``hint``
    is added to the refusal without ``--overwrite`` (e.g. "pass --resume to finish it").
    """
    path = Path(os.path.abspath(Path(path).expanduser()))  # "." has a name and a parent
    extra = tuple(Path(os.path.abspath(Path(p).expanduser())) for p in extra)
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(
            f"{option} {path}: {parent} is a file, not a folder; choose another {option}"
        )
    created = _make_folder(parent)
    lock = None
    try:
        lock = _Lock(parent / f".{path.name}.galforge-lock", str(path), option)
        present = [p for p in (path, *extra) if p.exists() or p.is_symlink()]
        if present and resume and all(entry_owned(p) for p in present):
            present = []
        if present:
            if not overwrite:
                alt = f" ({hint})" if hint else ""
                raise ConfigError(
                    f"{option} {path}: already exists; pass --overwrite to replace it{alt}, "
                    f"or choose another {option}"
                )
            foreign = next((p for p in present if not entry_owned(p)), None)
            if foreign is not None:
                raise ConfigError(
                    f"{option} {path}: --overwrite replaces only what galforge wrote, and "
                    f"{foreign} is not recorded as galforge's (in {parent / MANIFEST}); move "
                    f"it away or choose another {option}"
                )
            for p in present:
                remove_path(p)
        _update_manifest(parent, [p.name for p in (path, *extra)], [])
        return OutputEntry(path, lock, created, extra)
    except BaseException:
        if lock is not None:
            lock.release()
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        raise


def remove_entry(path) -> None:
    """Remove a single output galforge recorded (e.g. a finished job's progress records) and
    drop it from the manifest beside it; an unrecorded path is left alone."""
    path = Path(path)
    if entry_owned(path):
        remove_path(path)
        _update_manifest(path.parent, [], [], drop=[path.name])


def close_all(failed: bool = False) -> None:
    """Close every claim still open in this process (the CLI calls this when a command ends)."""
    for handle in list(reversed(_OPEN)):
        handle.close(failed=failed)


@contextlib.contextmanager
def scope():
    """Close, when the block ends, the claims made inside it (recording what was written; after
    a failure that wrote nothing, removing what the claims created)."""
    first = len(_OPEN)
    failed = True
    try:
        yield
        failed = False
    finally:
        for handle in list(reversed(_OPEN[first:])):
            handle.close(failed=failed)


def owning(fn):
    """Decorator: run ``fn`` in a :func:`scope`, so its claims end with it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with scope():
            return fn(*args, **kwargs)

    return wrapper
