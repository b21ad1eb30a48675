"""The error tree: every error convmem raises on purpose is a ConvMemError, exported from
``convmem`` and drawn in ``convmem.errors``' docstring."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import convmem
from convmem import errors

SRC = Path(convmem.__file__).parent


def _tree() -> list[type[errors.ConvMemError]]:
    found: list[type[errors.ConvMemError]] = []
    pending: list[type[errors.ConvMemError]] = [errors.ConvMemError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_in_the_tree_is_exported_and_drawn() -> None:
    drawing = inspect.getdoc(errors) or ""
    for cls in _tree():
        if cls.__name__.startswith("_"):  # a store's private refinement, caught as its base
            continue
        assert cls.__module__ == "convmem.errors", f"{cls.__name__} is defined outside errors.py"
        assert cls.__name__ in convmem.__all__, f"{cls.__name__} is not exported by convmem"
        assert f"── {cls.__name__}" in drawing or cls is errors.ConvMemError, (
            f"{cls.__name__} is not in the drawing in errors.py"
        )


def test_no_module_defines_an_exception_outside_the_tree() -> None:
    """Only the cache's internal Redis signals (which never reach a caller) stand apart;
    read from the source, so modules the other test's process never imported count too."""
    internal = {"L2Error", "L2Skipped", "CorruptPayload"}
    outside = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or path.name == "errors.py":
                continue
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            an_error = bases & {"Exception", "RuntimeError", "ValueError"} or any(
                b.endswith("Error") for b in bases
            )
            if an_error and node.name not in internal and not node.name.startswith("_"):
                outside.append(f"{path.relative_to(SRC)}:{node.name}")
    assert outside == []
