"""Typed stage parameters: declaration, validation and the semantic view used by cache keys.

A stage's parameters are a dataclass whose fields are declared with :func:`param`. OmegaConf
checks names and types when a recipe's mapping is merged onto the dataclass; :func:`param`'s
bounds and choices are checked afterwards. Every failure becomes one :class:`ParamError` that
names the field, the bad value and what is allowed; the recipe layer adds recipe and stage.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, dataclass, field
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ParamError(ValueError):
    """A bad stage parameter: ``field`` is the dotted field name, ``message`` says what is allowed."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        self.message = message
        super().__init__(f"field '{field_name}': {message}")


def param(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    semantic: bool = True,
    help: str = "",
) -> Any:
    """Declare one stage parameter.

    ``ge``/``gt``/``le``/``lt`` bound numbers, ``choices`` lists the allowed values, and
    ``semantic=False`` keeps a field that cannot change the output (device, progress, a tile
    size whose result is identical) out of the cache key. Mutable defaults (lists) are copied.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": tuple(choices) if choices else None,
            "semantic": semantic, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _allowed(f: dataclasses.Field) -> str:
    """Human text for what a field accepts."""
    m = f.metadata
    parts = []
    if m.get("choices"):
        parts.append("one of " + ", ".join(repr(c) for c in m["choices"]))
    bounds = [(m.get("ge"), ">="), (m.get("gt"), ">"), (m.get("le"), "<="), (m.get("lt"), "<")]
    parts += [f"{f.name} {op} {v}" for v, op in bounds if v is not None]
    type_name = getattr(f.type, "__name__", str(f.type))
    text = f"{type_name}" + (", " + " and ".join(parts) if parts else "")
    if m.get("help"):
        text += f" ({m['help']})"
    return text


def check_bounds(obj: Any) -> None:
    """Raise :class:`ParamError` for the first field of dataclass ``obj`` outside its bounds."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        m = f.metadata
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f.name, f"got {value!r}; allowed: a finite number, {_allowed(f)}")
        if m.get("choices") and value not in m["choices"]:
            raise ParamError(f.name, f"got {value!r}; allowed: {_allowed(f)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = ((m.get("ge") is None or value >= m["ge"]) and (m.get("gt") is None or value > m["gt"])
                  and (m.get("le") is None or value <= m["le"]) and (m.get("lt") is None or value < m["lt"]))
            if not ok:
                raise ParamError(f.name, f"got {value!r}; allowed: {_allowed(f)}")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()


def _literal(value: Any) -> Any:
    """Plain (already resolved) values are literal: escape ``${`` so the merge keeps a prompt
    such as ``"costs ${5}"`` as text instead of reading it as an interpolation."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, Mapping):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_literal(v) for v in value]
    return value


def build_params(schema: type, values: Mapping[str, Any] | DictConfig) -> Any:
    """Merge a recipe's mapping onto dataclass ``schema`` and return a checked instance.

    Unknown names, wrong types, missing required fields and out-of-range values all raise
    :class:`ParamError`.
    """
    base = OmegaConf.structured(schema)
    if not isinstance(values, DictConfig):
        values = _literal(values)
    try:
        merged = OmegaConf.merge(base, values)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise _translate(schema, e) from None
    check_bounds(obj)
    return obj


def _translate(schema: type, e: OmegaConfBaseException) -> ParamError:
    """Turn OmegaConf's merge error into a ParamError with the field and what is allowed."""
    key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "?")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    top = key.split(".")[0].split("[")[0]
    msg = str(e).splitlines()[0]
    if top not in fields:
        return ParamError(key, f"unknown field; allowed fields: {', '.join(sorted(fields))}")
    f = fields[top]
    if "missing mandatory value" in msg.lower():
        return ParamError(key, f"is required; allowed: {_allowed(f)}")
    return ParamError(key, f"{msg}; allowed: {_allowed(f)}")


def semantic_dict(obj: Any) -> dict[str, Any]:
    """The fields of params ``obj`` that can change a stage's output, as plain data."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("semantic", True):
            value = getattr(obj, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def describe(schema: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, allowed) for each field of ``schema``, for docs and ``--help``."""
    rows = []
    for f in dataclasses.fields(schema):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((f.name, getattr(f.type, "__name__", str(f.type)), default, _allowed(f)))
    return rows


__all__ = ["ParamError", "param", "build_params", "check_bounds", "semantic_dict", "describe", "dataclass"]
