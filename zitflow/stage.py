"""The stage contract: what a stage kind declares and what it is given when it runs.

A stage kind is a class with

* ``kind`` - its name in recipes (``sharpen``),
* ``version`` - bumped whenever its output for the same parameters and inputs changes, which
  invalidates its cache entries,
* ``Params`` - a dataclass of :func:`zitflow.params.param` fields,
* ``inputs`` - the named input slots and the artifact type each expects; a slot whose name is
  in ``optional`` may be left unconnected,
* ``output`` - the artifact type it returns,
* ``run(params, inputs, ctx)`` - a pure function of its parameters and input artifacts.

``identity(params, ctx)`` adds data beyond the parameters that decides the output (the model's
identity for model stages); it enters the cache key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .artifacts import Artifact

log = logging.getLogger("zitflow")


@dataclass
class RunContext:
    """What a running stage may use besides its inputs: never part of a cache key.

    ``runtime`` is the resolved ``runtime`` config (device, dtype, memory plan, progress),
    ``models`` the process-wide model pool, ``job`` the job's top-level facts (recipe name,
    prompt, seed, config hash) for metadata, ``notes`` a dict a stage may fill for the manifest.
    """

    runtime: Any = None
    models: Any = None
    model_config: Any = None
    job: Mapping[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    stage_name: str = ""

    @property
    def device(self) -> str:
        return getattr(self.runtime, "device", "cpu") or "cpu"

    @property
    def progress(self) -> bool:
        return bool(getattr(self.runtime, "progress", True))


class Stage:
    """Base class of stage kinds; see the module docstring for the contract."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type]
    inputs: ClassVar[Mapping[str, type[Artifact]]] = {}
    optional: ClassVar[frozenset[str]] = frozenset()
    output: ClassVar[type[Artifact]]
    #: True for stages that need a model from the pool (they add its identity to their key).
    uses_model: ClassVar[bool] = False

    def identity(self, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Extra key data that decides the output besides params and inputs (e.g. model id)."""
        return {}

    def run(self, params: Any, inputs: Mapping[str, Artifact], ctx: RunContext) -> Artifact:
        raise NotImplementedError

    def sink(self) -> bool:
        """True for stages whose output is written into the run dir (export)."""
        return False
