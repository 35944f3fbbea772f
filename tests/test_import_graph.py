"""Dependencies point one way (README, *How it works*), checked on the source: every import
statement of every module of the packages (including those inside functions and
``TYPE_CHECKING`` blocks), parsed with ``ast``.

    app, eval → service → generation, compression → retrieval (shared modules) → indexing

* ``indexing`` imports none of the layers above it;
* ``retrieval`` imports neither compression nor generation, service, app or eval: the code
  that runs retrieval and then compression sits above both (``service/stages.py``);
* ``compression`` reads only retrieval's shared modules (the context types, the parameters,
  table-header sharing), never its pipeline, first stage or selectors;
* those shared modules import nothing of retrieval's but each other (else compression would
  reach the internals through them);
* ``generation`` imports neither compression, service, app nor eval; ``service`` imports
  neither app nor eval.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("indexing", "retrieval", "compression", "generation", "service", "app", "eval")

RETRIEVAL_SHARED = {"retrieval", "retrieval.types", "retrieval.params", "retrieval.context"}
"""What of retrieval compression may import (``retrieval`` itself: the package's empty
``__init__``)."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "indexing": ("retrieval", "compression", "generation", "service", "app", "eval"),
    "retrieval": ("compression", "generation", "service", "app", "eval"),
    "compression": ("generation", "service", "app", "eval"),
    "generation": ("compression", "service", "app", "eval"),
    "service": ("app", "eval"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved); ``from a import b``
    counts as ``a`` and as ``a.b`` (``b`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".", 1)[0]


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imports_of(package: str) -> list[tuple[str, str]]:
    """``(module, imported)`` for every import of a module of ``package`` that names one of
    the project's packages."""
    return [
        (module_name(path), name)
        for path in modules(package)
        for name in sorted(imported_modules(path))
        if top(name) in PACKAGES
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_does_not_import_the_layers_above_it(package):
    assert modules(package), f"no modules found under {package}/"
    wrong = [(m, name) for m, name in imports_of(package) if top(name) in FORBIDDEN[package]]
    assert wrong == [], f"{package} must not import {', '.join(FORBIDDEN[package])}: {wrong}"


def test_compression_reads_only_the_shared_modules_of_retrieval():
    wrong = [(m, name) for m, name in imports_of("compression") if in_package(name, "retrieval") and not _shared(name)]
    assert wrong == [], f"compression may import only {sorted(RETRIEVAL_SHARED)} of retrieval: {wrong}"


def test_the_shared_modules_of_retrieval_import_only_each_other_and_indexing():
    for name in sorted(RETRIEVAL_SHARED - {"retrieval"}):
        path = ROOT / (name.replace(".", "/") + ".py")
        imported = {i for i in imported_modules(path) if top(i) in PACKAGES}
        wrong = sorted(i for i in imported if not (in_package(i, "indexing") or _shared(i)))
        assert wrong == [], f"{name} is shared with compression; it must not import {wrong}"


def test_the_stages_run_in_order_above_retrieval_and_compression():
    """What runs retrieval, then compression, is in ``service/``, which may import both."""
    imported = imported_modules(ROOT / "service" / "stages.py")
    assert any(in_package(i, "compression") for i in imported)
    assert any(in_package(i, "retrieval.pipeline") for i in imported)


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "retrieval"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text(
        "def late():\n    from compression.pruning import ContextCompressor\n"
        "from .types import Context\nimport service.engine as engine\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = imported_modules(pkg / "bad.py")
    assert {"compression.pruning", "retrieval.types", "service.engine"} <= found


def _shared(name: str) -> bool:
    """``name`` is a shared module of retrieval, or a name imported from one
    (``retrieval.types.Context``)."""
    return name in RETRIEVAL_SHARED or any(name.startswith(shared + ".") for shared in RETRIEVAL_SHARED - {"retrieval"})
