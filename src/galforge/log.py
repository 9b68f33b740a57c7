"""galforge's messages go through Python's :mod:`logging`, under the ``galforge`` logger.

A library does not decide where messages go: without a handler (a script, a notebook) records
of level INFO are dropped unless the caller configures logging, e.g.
``logging.basicConfig(level=logging.INFO)``.  The CLI calls :func:`configure_cli`, which
writes INFO and above to stderr, one line per record (``GALFORGE_LOG_LEVEL=debug|warning``
changes the level).

Long work shows a progress bar only on a terminal (:func:`interactive`); with output
redirected to a file (a batch job on a cluster) it logs one line per log interval instead,
so the log stays readable.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_cli", "get_logger", "interactive"]

ROOT = "galforge"


def get_logger(name: str = "") -> logging.Logger:
    """The ``galforge`` logger, or its child ``galforge.<name>``."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


def interactive() -> bool:
    """Whether stdout and stderr are both terminals (a progress bar can redraw in place)."""
    try:
        return bool(sys.stdout.isatty() and sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (it may be replaced after configuration)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property wins
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def configure_cli(level: str | int | None = None) -> logging.Logger:
    """Send ``galforge`` records of ``level`` (default INFO, or ``$GALFORGE_LOG_LEVEL``) and
    above to stderr, one line each; calling it again changes nothing but the level."""
    logger = get_logger()
    name = level if level is not None else os.environ.get("GALFORGE_LOG_LEVEL", "INFO")
    value = logging.getLevelName(name.upper()) if isinstance(name, str) else int(name)
    logger.setLevel(value if isinstance(value, int) else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Format())
        logger.addHandler(handler)
    return logger
