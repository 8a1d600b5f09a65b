"""Cache keys: ``key = sha256(canonical JSON of kind, version, semantic params, input keys, identity)``.

Normalisation makes equal meanings hash equal: mapping order never matters, tuples are lists,
floats that are whole numbers hash as the integer (``1.0`` and ``1`` are one key), other floats
by their shortest round-trip repr, and strings are NFC-normalised Unicode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import unicodedata
from enum import Enum
from pathlib import PurePath
from typing import Any, Mapping

KEY_SCHEMA = 1  # bump to invalidate every key (a change in how keys are computed)


def normalise(value: Any) -> Any:
    """Plain JSON data with one spelling per meaning (see module docstring)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Enum):
        return normalise(value.value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else float(repr(value))
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "_content_"):  # OmegaConf containers
        from omegaconf import OmegaConf

        return normalise(OmegaConf.to_container(value, resolve=True))
    raise TypeError(f"cannot put a {type(value).__name__} into a cache key")


def canonical_json(value: Any) -> str:
    return json.dumps(normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stage_key(kind: str, version: int, params: Mapping[str, Any], inputs: Mapping[str, str],
              identity: Mapping[str, Any] | None = None) -> str:
    """The cache key of one stage run (64 hex chars)."""
    payload = {"schema": KEY_SCHEMA, "kind": kind, "version": version, "params": params,
               "inputs": inputs, "identity": identity or {}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def short(key: str) -> str:
    return key[:12]
