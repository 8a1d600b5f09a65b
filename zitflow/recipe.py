"""From a composed config's ``stages`` mapping to a checked :class:`~zitflow.graph.Graph`.

A stage entry in a recipe::

    sharpen:                 # the stage's name, unique in the recipe
      kind: sharpen          # a built-in kind, or `_target_: my_pkg.stages.MyStage` (allow-listed)
      inputs: {image: fit}   # slot -> stage name; `input: fit` is short for a kind's only slot
      enabled: true          # false drops the stage and feeds its consumers with its input
      amount: 0.8            # the kind's parameters (see `python -m zitflow kinds`)

Every problem raises :class:`RecipeError` naming the recipe, the stage and the field.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .graph import Graph, GraphError, StageSpec
from .params import ParamError, build_params
from .registry import RegistryError, import_target, lookup_kind

RESERVED = ("kind", "_target_", "inputs", "input", "enabled")
SCHEMA_VERSION = 1


class RecipeError(ValueError):
    """A recipe that cannot run; the message says where and what is allowed."""


def _where(recipe: str, stage: str | None = None, field: str | None = None) -> str:
    out = f"recipe '{recipe}'"
    if stage is not None:
        out += f", stage '{stage}'"
    if field is not None:
        out += f", field '{field}'"
    return out


def build_graph(recipe: str, stages: Mapping[str, Any] | DictConfig, allow_modules: Iterable[str] = ()) -> Graph:
    """Check every stage entry and the wiring; return the graph with enabled stages only."""
    if isinstance(stages, DictConfig):
        try:
            stages = OmegaConf.to_container(stages, resolve=True)
        except OmegaConfBaseException as e:
            raise RecipeError(f"{_where(recipe, str(getattr(e, 'full_key', '') or '?'))}: {e}") from None
    if not isinstance(stages, Mapping) or not stages:
        raise RecipeError(f"{_where(recipe)}: 'stages' must be a non-empty mapping of stage name to stage")
    specs: dict[str, StageSpec] = {}
    dropped: dict[str, str | None] = {}
    for name, entry in stages.items():
        name = str(name)
        if entry is None:  # `stages.x=null` removes a stage
            dropped[name] = None
            continue
        if not isinstance(entry, Mapping):
            raise RecipeError(f"{_where(recipe, name)}: must be a mapping with 'kind', got {entry!r}")
        spec = _build_stage(recipe, name, dict(entry), allow_modules)
        if entry.get("enabled", True) is False:
            dropped[name] = _pass_through(spec)
            continue
        specs[name] = spec
    for spec in specs.values():
        for slot, src in list(spec.inputs.items()):
            seen = set()
            while src in dropped and src not in seen:
                seen.add(src)
                if dropped[src] is None:
                    raise RecipeError(f"{_where(recipe, spec.name)}: input '{slot}' reads from stage "
                                      f"'{src}', which is disabled and has not exactly one input of its "
                                      f"output's type to pass on; read from another stage instead")
                src = dropped[src]
            spec.inputs[slot] = src
    graph = Graph(recipe, specs)
    try:
        graph.check()
    except GraphError as e:
        raise RecipeError(str(e)) from None
    return graph


def _pass_through(spec: StageSpec) -> str | None:
    """The input a disabled stage hands to its readers: its only input, or its only input of the
    type it outputs (a disabled ``fit`` passes its ``image`` on, not its ``size`` plan)."""
    srcs = list(spec.inputs.items())
    if len(srcs) == 1:
        return srcs[0][1]
    same = [src for slot, src in srcs if spec.cls.inputs[slot] is spec.cls.output]
    return same[0] if len(same) == 1 else None


def _build_stage(recipe: str, name: str, entry: dict[str, Any], allow_modules: Iterable[str]) -> StageSpec:
    kind = entry.get("kind")
    target = entry.get("_target_")
    try:
        if target is not None:
            cls = import_target(str(target), allow_modules)
        elif kind is None:
            raise RegistryError("needs 'kind' (a built-in stage kind) or '_target_' (your own class)")
        else:
            cls = lookup_kind(str(kind))
    except RegistryError as e:
        raise RecipeError(f"{_where(recipe, name, 'kind' if target is None else '_target_')}: {e}") from None
    if kind is not None and target is None and cls.kind != kind:
        raise RecipeError(f"{_where(recipe, name, 'kind')}: {kind!r} resolves to {cls.kind!r}")

    inputs = _inputs(recipe, name, cls, entry)
    values = {k: v for k, v in entry.items() if k not in RESERVED}
    try:
        params = build_params(cls.Params, values)
    except ParamError as e:
        raise RecipeError(f"{_where(recipe, name, e.field)} ({cls.kind}): {e.message}") from None
    return StageSpec(name, cls, params, inputs)


def _inputs(recipe: str, name: str, cls, entry: Mapping[str, Any]) -> dict[str, str]:
    slots = dict(cls.inputs)
    if "input" in entry and "inputs" in entry:
        raise RecipeError(f"{_where(recipe, name, 'input')}: give either 'input' or 'inputs', not both")
    if "input" in entry:
        required = [s for s in slots if s not in cls.optional]
        if len(required) != 1:
            raise RecipeError(f"{_where(recipe, name, 'input')}: kind '{cls.kind}' has slots "
                              f"{', '.join(slots) or 'none'}; name them with 'inputs: {{slot: stage}}'")
        inputs = {required[0]: entry["input"]}
    else:
        inputs = entry.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise RecipeError(f"{_where(recipe, name, 'inputs')}: must map slot to stage name, got {inputs!r}")
    inputs = {str(k): str(v) for k, v in inputs.items() if v is not None}
    for slot in inputs:
        if slot not in slots:
            raise RecipeError(f"{_where(recipe, name, 'inputs.' + slot)}: kind '{cls.kind}' has no input "
                              f"'{slot}'; its inputs: {', '.join(slots) or 'none'}")
    missing = [s for s in slots if s not in inputs and s not in cls.optional]
    if missing:
        raise RecipeError(f"{_where(recipe, name, 'inputs')}: kind '{cls.kind}' needs input(s) "
                          f"{', '.join(missing)} (e.g. inputs: {{{missing[0]}: <stage name>}})")
    return inputs


#: What a recipe of each schema must look like, as the edits that bring a recipe written for the
#: schema before it up to date. An older recipe's error lists every step from its version to
#: :data:`SCHEMA_VERSION`; a new schema adds an entry here and a section in docs/recipes.md#schema.
SCHEMA_CHANGES: dict[int, list[str]] = {
    1: ["start the file with '# @package _global_' so its keys land at the top of the config",
        "put the stages under one top-level 'stages:' mapping of stage name -> stage",
        "give each stage 'kind: <built-in kind>' (python -m zitflow kinds) or '_target_: pkg.Class'",
        "wire stages with 'input: <stage>' or 'inputs: {slot: <stage>}'",
        "take the job's prompt, negative prompt, seed and input image from ${prompt}, "
        "${negative_prompt}, ${seed}, ${input}",
        "then declare 'schema_version: 1'"],
}


def check_schema(recipe: str, declared: Any) -> None:
    """Refuse a recipe written for another recipe schema, saying what to change.

    Missing or older: the edits from :data:`SCHEMA_CHANGES` between its version and ours, in
    order. Newer: upgrade zitflow. Not an integer: the value to write instead.
    """
    where = _where(recipe)
    if isinstance(declared, bool) or (declared is not None and not isinstance(declared, int)):
        try:
            as_int = int(str(declared).strip().lstrip("vV").split(".")[0])
        except ValueError:
            as_int = SCHEMA_VERSION
        raise RecipeError(f"{where}: schema_version must be a whole number, got {declared!r}; "
                          f"write 'schema_version: {as_int}'")
    if declared == SCHEMA_VERSION:
        return
    if declared is not None and declared > SCHEMA_VERSION:
        raise RecipeError(f"{where}: written for recipe schema {declared}, newer than the schema "
                          f"{SCHEMA_VERSION} this zitflow reads; upgrade zitflow (pip install -U zitflow) "
                          f"or use a copy of the recipe written for schema {SCHEMA_VERSION}")
    start = 0 if declared is None else int(declared)
    steps = [step for v in range(max(start, 0) + 1, SCHEMA_VERSION + 1) for step in SCHEMA_CHANGES.get(v, [])]
    what = "declares no 'schema_version'" if declared is None else f"is written for recipe schema {declared}"
    raise RecipeError(f"{where} {what}; this zitflow reads schema {SCHEMA_VERSION}. To update it: "
                      + "; ".join(f"({i}) {step}" for i, step in enumerate(steps, 1))
                      + " (docs/recipes.md#schema)")
