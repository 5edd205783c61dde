"""A tiny name -> object registry with errors that list the valid names and suggest a close match, and `resolve`,
which imports a declared function only when it is first used (so that names, summaries and settings are known
without importing PyTorch)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """One line: the unknown name, a close match if there is one, and every valid name."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid: {', '.join(sorted(known))}."


def resolve(target: Callable | str) -> Callable:
    """`target` itself, or for 'package.module:name' that module's attribute (the module imported on first use)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class Registry(Generic[T]):
    """Maps names to objects (classes, functions, specs) of one kind, e.g. methods or models."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return wrap

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(unknown_name_message(self.kind, name, list(self._items)))
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: Any) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
