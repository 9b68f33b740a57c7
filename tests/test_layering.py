"""The house's floors, checked on the source: a lower floor never imports a higher one.

Floors, bottom up (docs/architecture.md): `errors`, `fileio`, `seeding`, `interrupt`,
`fitsheader`, `outputs`, `jsonsafe`, `tables`, `log`, `options` and `pretrained` (shipped files only);
`models`, `data`, `config`; `training`, `bundle`, `runfolder`; `generation` and, beside it
using only `data` and the bottom floor, `evaluation`; `projection` (uses both) and `galsim`
(GalSim objects from bundles); `cli` on top, with the package's own `galforge/__init__.py`
(`galforge.load`) and `__main__`. Every import counts, at any depth (function-local ones too),
absolute or relative. Inside a package, module-level imports must not form a circle. A new
module or package of `src/galforge` must be given its floor in FLOORS (the test says so).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

FLOORS: list[set[str]] = [
    {
        "errors",
        "fileio",
        "seeding",
        "interrupt",
        "pretrained",
        "fitsheader",
        "outputs",
        "jsonsafe",
        "tables",
        "log",
        "options",
    },
    {"models", "data", "config"},
    {"training", "bundle", "runfolder"},
    {"generation", "evaluation"},
    {"projection", "galsim"},
    {"cli", "__init__", "__main__"},
]
# Imports between packages of one floor are forbidden (data→models, generation→evaluation) but
# on the bottom floor (small helpers using each other and raising its errors), on the top one,
# and for these: training writes run folders and bundles, and a run folder exports a bundle.
OPEN_FLOORS = {0, len(FLOORS) - 1}
SIDEWAYS = {("training", "bundle"), ("training", "runfolder"), ("runfolder", "bundle")}
# Packages that may import only these (beyond themselves): evaluation works on arrays.
ONLY = {"evaluation": FLOORS[0] | {"data"}}
# Names of the package root that any floor may import (constants, no code behind them).
ROOT_NAMES = {"__version__", "GalforgeError"}

FLOOR_OF = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str) -> str:
    """`galforge.data.readers` → `data`; `galforge` (the root) → `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(
    module: str, source: str, is_package: bool, known: set[str], *, module_level_only: bool = False
) -> list[tuple[str, int]]:
    """The galforge modules ``module`` imports, as (module, line), resolving relative imports.

    ``from P import name`` counts as importing ``P.name`` when that is a module in ``known``, else
    as importing ``P`` itself. With ``module_level_only``, imports inside functions and
    ``if TYPE_CHECKING:`` blocks are left out (they do not run when the module is imported).
    """
    tree = ast.parse(source)
    nodes: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                continue
            if (
                module_level_only
                and isinstance(child, ast.If)
                and "TYPE_CHECKING" in ast.unparse(child.test)
            ):
                nodes.extend(child.orelse)
                for n in child.orelse:
                    visit(n)
                continue
            nodes.append(child)
            visit(child)

    visit(tree)
    found: list[tuple[str, int]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "galforge"]


def _allowed(importer: str, target: str) -> bool:
    if importer == target or importer not in FLOOR_OF:
        return importer == target
    if importer in ONLY and target not in ONLY[importer]:
        return False
    lo, hi = FLOOR_OF[importer], FLOOR_OF[target]
    return hi < lo or (hi == lo and (lo in OPEN_FLOORS or (importer, target) in SIDEWAYS))


def layering_violations(sources: dict[str, tuple[str, str, bool]]) -> list[str]:
    """``sources``: module name → (file label, source text, is a package ``__init__``).

    Returns one ``file:line: ...`` message per import that climbs a floor, crosses a forbidden
    side or touches a package the floors do not name.
    """
    known = set(sources)
    problems = []
    for module, (label, source, is_package) in sorted(sources.items()):
        importer = _package_of(module)
        if importer not in FLOOR_OF:
            problems.append(
                f"{label}:1: {module} is in {importer}, a package no floor names (add it to FLOORS)"
            )
            continue
        for target_module, line in imports_of(module, source, is_package, known):
            if target_module == "galforge":
                continue  # the root's constants (ROOT_NAMES); its own imports are checked
            target = _package_of(target_module)
            if target not in FLOOR_OF:
                problems.append(
                    f"{label}:{line}: {module} imports {target_module}, a package "
                    "no floor names (add it to FLOORS)"
                )
            elif not _allowed(importer, target):
                problems.append(
                    f"{label}:{line}: {module} (floor {FLOOR_OF[importer]}, {importer}) imports "
                    f"{target_module} (floor {FLOOR_OF[target]}, {target})"
                )
    return problems


def root_name_violations(sources: dict[str, tuple[str, str, bool]]) -> list[str]:
    """Names taken from the package root itself must be its constants (ROOT_NAMES)."""
    problems = []
    for module, (label, source, _) in sorted(sources.items()):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "galforge" and not node.level:
                for alias in node.names:
                    if (
                        f"galforge.{alias.name}" not in sources
                        and alias.name not in ROOT_NAMES
                        and _package_of(module) not in ("__init__", "__main__", "cli")
                    ):
                        problems.append(
                            f"{label}:{node.lineno}: {module} imports "
                            f"galforge.{alias.name} from the package root"
                        )
    return problems


def import_cycles(sources: dict[str, tuple[str, str, bool]]) -> list[list[str]]:
    """Circles of module-level imports between modules of one package (incl. its __init__)."""

    def package(name: str) -> str:  # a package's __init__ belongs to the package itself
        return name if sources[name][2] else name.rsplit(".", 1)[0]

    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, (_, source, is_package) in sources.items():
        for target, _ in imports_of(
            module, source, is_package, set(sources), module_level_only=True
        ):
            if target in sources and target != module and package(target) == package(module):
                graph[module].add(target)
    # strongly connected components (Tarjan)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return cycles


def galforge_sources() -> dict[str, tuple[str, str, bool]]:
    return {
        module_name(path, SRC): (
            str(path.relative_to(SRC.parent)),
            path.read_text(),
            path.name == "__init__.py",
        )
        for path in sorted((SRC / "galforge").rglob("*.py"))
    }


# --------------------------------------------------------------------------- the house


def test_no_floor_imports_a_higher_one():
    problems = layering_violations(galforge_sources()) + root_name_violations(galforge_sources())
    assert not problems, "\n".join(problems)


def test_no_import_circles_inside_a_package():
    cycles = import_cycles(galforge_sources())
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


# --------------------------------------------------------------------------- the checker


def _planted(module: str, source: str, is_package: bool = False):
    sources = galforge_sources()
    label = "src/" + module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    sources[module] = (label, source, is_package)
    return sources


@pytest.mark.parametrize(
    "module, source, line, target",
    [
        # an upward import hidden inside a function
        (
            "galforge.data.planted",
            '"""x"""\n\n\ndef f():\n    from galforge.training import trainer\n',
            5,
            "galforge.training.trainer",
        ),
        # a forbidden sideways import, relative
        ("galforge.data.planted", "from ..models import registry\n", 1, "galforge.models.registry"),
        # evaluation may use data and the bottom floor only
        ("galforge.evaluation.planted", "import galforge.bundle\n", 1, "galforge.bundle"),
        (
            "galforge.evaluation.planted",
            "from ..generation import sampling as s\n",
            1,
            "galforge.generation.sampling",
        ),
        # the bottom floor knows nothing above it, not even through `from galforge import`
        ("galforge.seeding", "from galforge import models\n", 1, "galforge.models"),
    ],
)
def test_the_checker_names_a_planted_import(module, source, line, target):
    problems = layering_violations(_planted(module, source))
    label = "src/" + module.replace(".", "/") + ".py"
    assert [p for p in problems if p.startswith(f"{label}:{line}:") and target in p], problems


def test_the_checker_lets_allowed_imports_pass():
    source = (
        "from galforge import __version__\nfrom galforge.errors import DataError\n"
        "from . import normalize\n\n\ndef f():\n    import galforge.fileio\n"
    )
    for module, text in (
        ("galforge.data.planted", source),
        ("galforge.cli.planted", "import galforge.training\n"),
        ("galforge.training.planted", "from ..runfolder import RunFolder\n"),
    ):
        label = "src/" + module.replace(".", "/") + ".py:"
        assert [p for p in layering_violations(_planted(module, text)) if p.startswith(label)] == []


def test_the_cycle_check_finds_a_planted_circle():
    sources = _planted("galforge.data.planted_a", "from galforge.data import planted_b\n")
    sources["galforge.data.planted_b"] = ("b.py", "from .planted_a import x\n", False)
    assert ["galforge.data.planted_a", "galforge.data.planted_b"] in import_cycles(sources)
    # a function-local import breaks no circle at import time
    sources["galforge.data.planted_b"] = ("b.py", "def f():\n    from .planted_a import x\n", False)
    assert ["galforge.data.planted_a", "galforge.data.planted_b"] not in import_cycles(sources)
