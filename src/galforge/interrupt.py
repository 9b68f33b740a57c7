"""Stopping long runs cleanly on Ctrl-C (SIGINT) or SIGTERM.

``galforge train`` and ``galforge field`` run inside :func:`stop_requests`.  The first
SIGINT/SIGTERM only records the request; the running loop asks :func:`requested` after each
unit of work (a training step, a field tile), finishes that unit, saves what lets the run
continue (a checkpoint, the tile records) and raises :class:`galforge.errors.Interrupted`,
which the command line prints as one line and turns into exit status 130 (SIGINT) or 143
(SIGTERM).  A second signal aborts at once: SIGINT raises ``KeyboardInterrupt`` and SIGTERM
``SystemExit(143)`` where the program stands.  Everything galforge writes is written
atomically (see :mod:`galforge.fileio` and the checkpoint module), so an abort leaves the
previous checkpoint whole.

Outside :func:`stop_requests` (or in another thread than the main one) signals keep their
usual effect.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_lock = threading.Lock()
_pending: list[int] = []


def requested() -> int | None:
    """The number of the signal that asked the current run to stop, or None."""
    return _pending[0] if _pending else None


def request(signum: int = signal.SIGINT) -> None:
    """Ask the current run to stop after its current unit of work (as the first signal does)."""
    with _lock:
        if not _pending:
            _pending.append(int(signum))


def clear() -> None:
    """Forget a stop request (done when a :func:`stop_requests` block ends)."""
    with _lock:
        _pending.clear()


def exit_code(signum: int) -> int:
    """The shell's status for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextmanager
def stop_requests(what: str = "the run", unit: str = "step") -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM ask for a clean stop instead of killing the program.

    ``what`` and ``unit`` word the note printed on the first signal ("stopping the run after
    the current step; press Ctrl-C again to abort at once").
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def handler(signum, frame) -> None:
        if requested() is None:
            request(signum)
            print(
                f"\n{signal_name(signum)}: stopping {what} after the current {unit}; "
                "press Ctrl-C again to abort at once",
                file=sys.stderr,
                flush=True,
            )
            return
        restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(exit_code(signum))

    clear()
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        restore()
        clear()
