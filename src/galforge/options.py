"""Option objects: typed, frozen dataclasses of a function's settings, checked once.

A function with many settings takes one option object (``FieldOptions``, ``GalSimOptions``,
``EvaluateOptions``, ...) instead of a long keyword list; its old keywords keep working
through :meth:`Options.build`.  A subclass declares its fields with their types and
defaults; a string (or number) choice is declared as a :data:`typing.Literal` in the
annotation, alone or in a union (``Literal["zarr", "fits"] | None``,
``bool | Literal["auto"]``), and :func:`check_choices` checks every such field from the
annotation itself, so the allowed values are written once.  Field metadata may name the
command-line flag of a field (``option``), which the message then uses, and may word the
allowed values (``choices``).

Subclasses check what else they need in ``__post_init__`` (after calling the base's), may
normalise values there with :meth:`Options._set` (``"FITS"`` → ``"fits"``), and raise their
package's :class:`galforge.errors.GalforgeError` (the class attribute ``ERROR``; ``WHERE`` begins the messages).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from galforge.errors import ConfigError, GalforgeError

__all__ = ["Options", "check_choices", "choices_of", "label_of"]

T = TypeVar("T", bound="Options")


def _members(annotation) -> list:
    """The members of a union annotation (the annotation itself when not a union)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def choices_of(annotation) -> tuple[tuple, tuple]:
    """``(choices, other_types)`` of an annotation: the values of its ``Literal`` members and
    the plain classes beside them (``type(None)`` for ``| None``)."""
    choices: list = []
    others: list = []
    for m in _members(annotation):
        if get_origin(m) is Literal:
            choices.extend(get_args(m))
        elif m is None or m is type(None):
            others.append(type(None))
        elif isinstance(m, type):
            others.append(m)
    return tuple(choices), tuple(others)


def _is_choice(value, choices: tuple) -> bool:
    # True == 1 in Python: a choice matches only a value of its own type
    return any(value == c and type(value) is type(c) for c in choices)


def label_of(f: dataclasses.Field) -> str:
    """How a field is named in messages: its command-line flag, else ``name=``."""
    option = f.metadata.get("option")
    return f"{option} " if option else f"{f.name}="


@functools.cache
def _choice_fields(cls: type) -> dict[str, tuple[tuple, tuple]]:
    """``{field: (choices, other types)}`` of the dataclass ``cls``'s fields whose annotation
    holds a ``Literal``.  String annotations are resolved in the class's module one by one; one
    that does not resolve (a name imported for type checkers only) holds no checked choice."""
    namespace = dict(vars(sys.modules[cls.__module__])) if cls.__module__ in sys.modules else {}
    found = {}
    for f in dataclasses.fields(cls):
        annotation = f.type
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the class's own annotation
            except Exception:
                continue
        choices, others = choices_of(annotation)
        if choices:
            found[f.name] = (choices, others)
    return found


def allowed_text(f: dataclasses.Field, choices: tuple, others: tuple) -> str:
    """``one of a, b, c`` (``True, False`` for a ``bool`` beside the choices; ``None`` is the
    unset default and left out), or the field's own wording (metadata ``choices``)."""
    if f.metadata.get("choices"):
        return str(f.metadata["choices"])
    allowed = [str(c) for c in choices]
    for t in others:
        if t is bool:
            allowed += ["True", "False"]
        elif t is not type(None):
            allowed.append(f"a {t.__name__}")
    return "one of " + ", ".join(allowed)


def check_choices(obj, *, where: str = "", error: type[GalforgeError] = ConfigError) -> None:
    """Check every field of the dataclass ``obj`` whose annotation holds a ``Literal``.

    A value passes when it is one of the literal values (of the same type) or an instance of
    another class of the union (``None`` for ``| None``).  Otherwise ``error`` is raised with
    one line naming the field (its flag when the field's metadata has ``option``), the value
    and the allowed values, prefixed by ``where``.
    """
    for f in dataclasses.fields(obj):
        if f.name not in _choice_fields(type(obj)):
            continue
        choices, others = _choice_fields(type(obj))[f.name]
        value = getattr(obj, f.name)
        if _is_choice(value, choices) or (others and isinstance(value, others)):
            continue
        prefix = f"{where}: " if where else ""
        raise error(f"{prefix}{label_of(f)}{value!r}: choose {allowed_text(f, choices, others)}")


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the option objects (see the module docstring)."""

    #: the exception raised for a bad value, and the name messages begin with
    ERROR: ClassVar[type[GalforgeError]] = ConfigError
    WHERE: ClassVar[str] = ""
    #: the function whose keywords these are (named when a keyword is unknown)
    CALLER: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_choices(self, where=self.WHERE, error=self.ERROR)

    def _set(self, name: str, value) -> None:
        """Normalise a field in ``__post_init__`` (the object is frozen afterwards)."""
        object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls: type[T], options: T | Mapping[str, Any] | None = None, **kwargs) -> T:
        """The options of a call: ``options`` (an object of this class, a dict or None) with
        the keywords ``kwargs`` laid over it; an unknown keyword is refused in one line."""
        if isinstance(options, cls):
            base = options.as_dict()
        elif options is None:
            base = {}
        elif isinstance(options, Mapping):
            base = dict(options)
        else:
            raise cls.ERROR(
                f"{cls.CALLER or cls.WHERE or cls.__name__}: options must be a {cls.__name__} or a dict, "
                f"not {type(options).__name__}"
            )
        merged = {**base, **kwargs}
        unknown = sorted(set(merged) - set(cls.names()))
        if unknown:
            raise cls.ERROR(
                f"unknown {cls.CALLER or cls.WHERE or cls.__name__} option(s) "
                f"{', '.join(unknown)}; choose from {', '.join(cls.names())}"
            )
        if isinstance(options, cls) and not kwargs:
            return options
        return cls(**merged)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (values as they are: no deep copy)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)
