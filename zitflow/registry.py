"""Stage kinds by name, and the allow-list that guards user stage classes.

Built-in kinds register themselves with :func:`register`. A recipe may name a user's own class
with ``_target_: package.module.ClassName`` instead of ``kind``; it is imported only when its
top-level package (or the module itself) is on the allow-list, which comes from the user's own
settings (command line, ``ZITFLOW_ALLOW_MODULES``, the user config file) and never from a recipe.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from .stage import Stage

_KINDS: dict[str, type[Stage]] = {}


class RegistryError(ValueError):
    """An unknown kind or a ``_target_`` that is not allowed or not a stage."""


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make ``cls`` available to recipes as ``kind: <cls.kind>``."""
    _KINDS[cls.kind] = cls
    return cls


def kinds() -> dict[str, type[Stage]]:
    """All built-in kinds, loading the ``zitflow.stages`` package first."""
    importlib.import_module("zitflow.stages")
    return dict(_KINDS)


def lookup_kind(kind: str) -> type[Stage]:
    known = kinds()
    if kind not in known:
        raise RegistryError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(known))}")
    return known[kind]


def is_allowed(target: str, allow: Iterable[str]) -> bool:
    """True if dotted path ``target`` lies inside one of the allowed modules or packages."""
    return any(target == a or target.startswith(a.rstrip(".") + ".") for a in allow if a)


def import_target(target: str, allow: Iterable[str]) -> type[Stage]:
    """Import ``package.module.Class`` if allowed and check that it is a :class:`Stage`."""
    allow = list(allow)
    if not is_allowed(target, allow):
        raise RegistryError(
            f"_target_ {target!r} is not allowed: recipes may only use modules that your own "
            f"settings allow (allow_modules={allow}); add its package with "
            f"allow_modules=[{target.split('.')[0]}] on the command line or in ZITFLOW_ALLOW_MODULES")
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise RegistryError(f"_target_ {target!r} cannot be imported: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, Stage)):
        raise RegistryError(f"_target_ {target!r} is not a zitflow Stage subclass")
    return obj
