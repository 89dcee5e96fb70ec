"""Every public function and class of sedmon_core says what it takes and returns."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import sedmon_core


def _modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(sedmon_core.__path__))
    return [importlib.import_module(f"sedmon_core.{name}") for name in names]


def _public(module: ModuleType) -> list[str]:
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_module_and_its_public_names_have_docstrings(module: ModuleType) -> None:
    assert (module.__doc__ or "").strip(), f"{module.__name__} has no docstring"
    missing = [n for n in _public(module) if not _documented(n, getattr(module, n))]
    assert missing == []


def _documented(name: str, obj: object) -> bool:
    doc = (obj.__doc__ or "").strip()
    # A dataclass without a docstring gets its signature as one: that documents nothing.
    return bool(doc) and not doc.startswith(f"{name}(")


def test_the_package_has_every_module_the_math_needs() -> None:
    names = {m.__name__.rsplit(".", 1)[1] for m in _modules()}
    assert {"spectrum", "noise", "coupling", "phases", "changepoints", "granger"} <= names
    assert {"reliability", "sketch", "schemas"} <= names
