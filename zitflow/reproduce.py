"""``python -m zitflow reproduce IMAGE``: make an exported image again from its own metadata.

Two sources of truth, tried in this order:

* **zitflow's record** (the ``zitflow`` PNG chunk, or the XMP packet of a JPEG / WebP export):
  the recipe name, the command-line overrides, the model identity and the full resolved job
  config (``schema_version``, prompt, negative prompt, seed, input, every stage's parameters,
  the model section). The job is rebuilt from that recorded config, so it does not depend on
  the recipe file still being on the search path or unchanged; a note says when the recipe
  there now composes differently. Every stage then has the key it had: with the cache present
  nothing runs again (generation included) and the output is byte-identical. A record without
  its config (a JPEG whose metadata was trimmed to fit) is re-composed from recipe + overrides.
* **A1111-style ``parameters`` text** that other tools write (A1111, Forge, Fooocus in A1111
  mode): prompt, negative prompt, steps, seed, size and CFG scale are mapped onto a recipe
  (``--recipe``, default ``poster``); every other field is listed as ignored, with why.

Only how-to-run settings may be given on top of a recorded job (``runtime.*``, ``cache.*``,
``model.path``, ``allow_modules``): anything else would make a different image, which is what
``python -m zitflow recipe=NAME ...`` with the printed overrides is for.

Errors (missing file, not an image, no metadata, a recipe that cannot be rebuilt) raise
:class:`ReproduceError` with one line; the command prints it and exits 2.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from . import metadata

#: overrides a recorded job accepts: they change how it runs, never what it makes
RUN_ONLY = ("runtime", "cache", "allow_modules", "model.path")
#: A1111 sampler names that are zitflow's own sampler (nothing is lost when they are ignored)
OUR_SAMPLERS = {metadata.SAMPLER.lower(), "euler", "flowmatcheuler", "flow match euler"}
#: the stage kinds that make the picture: a reproduce with the cache present must hit all of them
GENERATION_KINDS = ("encode", "denoise", "decode")


class ReproduceError(ValueError):
    """Why an image cannot be reproduced, in one line."""


@dataclass
class Plan:
    """What :func:`plan` found: the config to run and what it said about it."""

    source: str  # "zitflow" (recorded job) or "parameters" (A1111 text)
    recipe: str
    cfg: DictConfig
    overrides: list[str]  # the job's command-line overrides (recorded, or mapped from the text)
    record: dict[str, Any] | None = None
    mapped: dict[str, Any] = field(default_factory=dict)  # A1111 field -> value used
    ignored: list[str] = field(default_factory=list)  # "Field (why)" for A1111 fields not used
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    plan: Plan
    manifest: Any
    written: dict[str, str]
    out_dir: Path
    match: str | None = None  # the written file whose pixels equal the source image's
    differs: list[str] = field(default_factory=list)  # "file: max |diff| N" for same-size outputs that differ


# -- reading --------------------------------------------------------------------------------
def read_metadata(path: str | Path) -> dict[str, Any]:
    """:func:`zitflow.metadata.parse` of ``path``, or :class:`ReproduceError` saying what is wrong."""
    p = Path(path)
    if not p.exists():
        raise ReproduceError(f"{path}: no such file")
    if not p.is_file():
        raise ReproduceError(f"{path}: not a file")
    try:
        m = metadata.parse(p)
    except Exception as e:  # PIL's UnidentifiedImageError, truncated files, ...
        from PIL import UnidentifiedImageError

        why = "" if isinstance(e, UnidentifiedImageError) else f" ({type(e).__name__}: {str(e).splitlines()[0]})"
        raise ReproduceError(f"{path}: not an image zitflow can read (PNG, JPEG or WebP){why}") from None
    if m["zitflow"] is None and not m["parameters"]:
        other = f" (it has {', '.join(m['other'])}, which zitflow does not read)" if m["other"] else ""
        raise ReproduceError(f"{path}: no generation metadata: neither zitflow's record nor A1111-style "
                             f"'parameters' text{other}; nothing to reproduce from")
    return m


def _escape(value: Any) -> Any:
    """Recorded strings are literal: keep OmegaConf from reading ``${...}`` in them."""
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, Mapping):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def hydra_quote(text: str) -> str:
    """``text`` as a Hydra override value: single-quoted, ``'`` and ``${`` escaped. Hydra reads a
    backslash as an escape only before a quote (or the closing one), so only those runs double."""
    import re

    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(text))
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _compose(overrides: Iterable[str], recipe: str | None = None) -> DictConfig:
    from .catalog import compose_recipe

    try:
        return compose_recipe(recipe or "poster", list(overrides))
    except ValueError:
        raise
    except Exception as e:  # Hydra's own errors: a bad override, a missing config group option
        raise ReproduceError(f"cannot compose recipe '{recipe}': {str(e).splitlines()[0]}") from None


# -- planning -------------------------------------------------------------------------------
def plan(path: str | Path, overrides: Iterable[str] = (), recipe: str | None = None) -> Plan:
    """Read ``path`` and build the config that makes it again (nothing runs)."""
    overrides = list(overrides)
    m = read_metadata(path)
    if m["zitflow"] is not None:
        if recipe:
            raise ReproduceError(f"{path} records its own recipe '{m['zitflow'].get('recipe')}'; --recipe is for "
                                 "images from other tools")
        return _plan_record(m["zitflow"], overrides)
    return _plan_parameters(m["fields"] or {}, overrides, recipe)


def _plan_record(record: dict[str, Any], overrides: list[str]) -> Plan:
    bad = [o for o in overrides if not any(_key(o) == k or _key(o).startswith(k + ".") or
                                           _key(o).replace("/", ".").split(".")[0] == k for k in RUN_ONLY)]
    if bad:
        raise ReproduceError(f"reproduce re-makes the recorded job; {', '.join(bad)} would change it (allowed: "
                             f"runtime.*, cache.*, model.path, allow_modules). To make a variant, run "
                             f"python -m zitflow recipe={record.get('recipe')} with the overrides it printed")
    recipe = str(record.get("recipe") or "")
    if not recipe:
        raise ReproduceError("the image's zitflow record names no recipe")
    recorded = [str(o) for o in record.get("overrides") or []]
    config = record.get("config")
    model_path = [o.split("=", 1)[1] for o in overrides if _key(o) == "model.path"]
    run_only = [o for o in overrides if _key(o) != "model.path"]
    notes: list[str] = []
    if isinstance(config, Mapping) and isinstance(config.get("stages"), Mapping):
        base = _compose(run_only)  # runtime and cache: defaults plus the user's settings
        config = dict(config, stages=_recipe_order(config["stages"], record.get("chain") or []))
        cfg = OmegaConf.create(_escape(config))
        cfg.runtime, cfg.cache = base.runtime, base.cache
        if "allow_modules" in base:
            cfg.allow_modules = base.allow_modules
        if model_path:
            cfg.model.path = model_path[-1]
        notes += _compare_with_search_path(recipe, recorded, config)
    else:
        notes.append(f"the record has no job config ({', '.join(record.get('truncated') or ['not recorded'])}); "
                     f"re-composing recipe '{recipe}' with its overrides from the search path")
        cfg = _compose([*[o for o in recorded if _key(o) != "recipe"], *overrides], recipe)
    return Plan("zitflow", recipe, cfg, recorded + [o for o in overrides if _key(o) == "allow_modules"],
                record=dict(record), notes=notes)


def _recipe_order(stages: Mapping[str, Any], chain: list[str]) -> dict[str, Any]:
    """``stages`` reordered so that the graph's run order has the recorded ``chain`` of kinds.

    The record's JSON has sorted keys, which loses the recipe's stage order; run order breaks ties
    by that order and the chain is part of the job's facts (and of the export's cache key). Greedy:
    at each step take a ready stage of the chain's next kind. Without a usable chain, unchanged.
    """
    names = list(stages)

    def deps(n: str) -> set[str]:
        entry = stages[n] if isinstance(stages[n], Mapping) else {}
        srcs = [entry["input"]] if entry.get("input") is not None else list((entry.get("inputs") or {}).values())
        return {str(s) for s in srcs if s is not None and str(s) in stages}

    live = [n for n in names if isinstance(stages[n], Mapping) and stages[n].get("enabled", True) is not False]
    done: list[str] = []
    for kind in chain:
        ready = [n for n in live if n not in done and deps(n) <= set(done) | (set(names) - set(live))
                 and stages[n].get("kind") == kind]
        if not ready:
            return dict(stages)
        done.append(ready[0])
    return {n: stages[n] for n in done + [n for n in names if n not in done]}


def _compare_with_search_path(recipe: str, recorded: list[str], config: Mapping[str, Any]) -> list[str]:
    """A note when recipe + overrides on today's search path no longer give the recorded stages."""
    try:
        now = _compose([o for o in recorded if _key(o) != "recipe"], recipe)
        stages = OmegaConf.to_container(now.stages, resolve=True)
    except Exception:
        return [f"recipe '{recipe}' is not on this search path (or no longer composes): reproducing from the "
                "stages recorded in the image"]
    if stages != config.get("stages"):
        return [f"recipe '{recipe}' on this search path has changed since this image was made: reproducing from "
                "the stages recorded in the image"]
    return []


def _plan_parameters(fields: Mapping[str, Any], overrides: list[str], recipe: str | None) -> Plan:
    recipe = recipe or fields.get("recipe") or "poster"
    cfg = _compose(overrides, recipe)
    mapped: dict[str, Any] = {}
    ignored: list[str] = []
    given = fields.get("fields") or {}

    cfg.prompt = _escape(fields.get("prompt") or "")
    mapped["prompt"] = fields.get("prompt") or ""
    if fields.get("negative_prompt"):
        cfg.negative_prompt = _escape(fields["negative_prompt"])
        mapped["Negative prompt"] = fields["negative_prompt"]
    if "seed" in fields:
        cfg.seed = int(fields["seed"])
        mapped["Seed"] = int(fields["seed"])
    denoise = [n for n, s in cfg.stages.items() if isinstance(s, Mapping) and s.get("kind") == "denoise"
               and s.get("enabled", True) is not False]
    if ("steps" in fields or "cfg_scale" in fields or "width" in fields) and not denoise:
        raise ReproduceError(f"recipe '{recipe}' generates nothing (no denoise stage); pick a generation recipe "
                             "with --recipe (python -m zitflow list)")
    for n in denoise:
        st = cfg.stages[n]
        if "steps" in fields:
            st.steps = int(fields["steps"])
            mapped["Steps"] = int(fields["steps"])
        if "cfg_scale" in fields:
            st.guidance_scale = float(fields["cfg_scale"])
            mapped["CFG scale"] = float(fields["cfg_scale"])
        if "width" in fields:
            size_stage = (st.get("inputs") or {}).get("size")
            target = cfg.stages.get(size_stage) if size_stage else None
            if target is not None and target.get("kind") == "resolution":
                target.width, target.height = int(fields["width"]), int(fields["height"])
                target.strategy = "exact"  # the other tool generated at this size
            else:
                st.width, st.height = int(fields["width"]), int(fields["height"])
            mapped["Size"] = f"{fields['width']}x{fields['height']}"
    reasons = {
        "Sampler": "zitflow samples with Z-Image-Turbo's FlowMatchEuler",
        "Model": "zitflow runs Z-Image-Turbo",
        "Model hash": "another model's weights",
        "Version": "the other tool's version",
        "Config hash": "zitflow's hash of the original job; a new one is computed",
        "zitflow recipe": "used to pick the recipe" if not fields.get("recipe") or recipe == fields.get("recipe")
                          else f"--recipe {recipe} given",
    }
    for name, value in given.items():
        if name in mapped:
            continue
        if name == "Sampler" and str(value).lower() in OUR_SAMPLERS:
            continue
        if name == "zitflow recipe" and recipe == fields.get("recipe"):
            continue
        if name == "Size" and "width" not in fields:
            ignored.append(f"Size ({value!r} is not WIDTHxHEIGHT)")
            continue
        why = reasons.get(name, "no zitflow equivalent" if name not in ("Steps", "Seed", "CFG scale")
                          else f"{value!r} is not a number")
        ignored.append(f"{name} ({why})")
    if mapped.get("CFG scale", 0.0) > 1.0:
        ignored_note = (f"CFG scale {mapped['CFG scale']:g} is used as guidance_scale; Z-Image-Turbo is distilled "
                        "for 0 and burns out above ~2: add the override stages.denoise.guidance_scale=0 "
                        "to use the model's own setting")
    else:
        ignored_note = None
    job_overrides = [f"recipe={recipe}", *overrides, f"prompt={hydra_quote(mapped['prompt'])}"]
    if "Negative prompt" in mapped:
        job_overrides.append(f"negative_prompt={hydra_quote(mapped['Negative prompt'])}")
    if "Seed" in mapped:
        job_overrides.append(f"seed={mapped['Seed']}")
    for n in denoise:
        if "Steps" in mapped:
            job_overrides.append(f"stages.{n}.steps={mapped['Steps']}")
        if "CFG scale" in mapped:
            job_overrides.append(f"stages.{n}.guidance_scale={mapped['CFG scale']}")
    if "Size" in mapped:
        job_overrides.append(f"size={mapped['Size']}")
    notes = [ignored_note] if ignored_note else []
    return Plan("parameters", recipe, cfg, job_overrides, mapped=mapped, ignored=ignored, notes=notes)


# -- running --------------------------------------------------------------------------------
def default_out_dir(recipe: str) -> Path:
    now = _dt.datetime.now()
    return Path("outputs") / "reproduce" / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{recipe}"


def reproduce(path: str | Path, out_dir: str | Path | None = None, overrides: Iterable[str] = (),
              recipe: str | None = None, reporter: Any = None) -> Result:
    """Plan, run and compare: the written outputs and whether one has the source's exact pixels."""
    import numpy as np
    from PIL import Image as PILImage

    from .job import make_job, run_job

    p = plan(path, overrides, recipe)
    job = make_job(p.cfg, p.recipe, p.overrides)
    if p.record is not None and p.record.get("config_hash") and job.ctx.job["config_hash"] != p.record["config_hash"]:
        p.notes.append(f"config hash {job.ctx.job['config_hash']} differs from the recorded "
                       f"{p.record['config_hash']} (model.path given?): the export is re-made with new metadata")
    out = Path(out_dir) if out_dir is not None else default_out_dir(p.recipe)
    manifest = run_job(job, out, reporter)
    written = _written(out)
    result = Result(p, manifest, written, out)
    with PILImage.open(path) as src_img:
        src = np.asarray(src_img.convert("RGBA" if src_img.mode in ("RGBA", "LA", "PA") else "RGB"))
    for stage, file in written.items():
        try:
            with PILImage.open(file) as im:
                got = np.asarray(im.convert("RGBA" if src.shape[2] == 4 else "RGB"))
        except Exception:
            continue
        if got.shape != src.shape:
            continue
        if np.array_equal(got, src):
            result.match = file
            break
        diff = int(np.abs(got.astype(np.int16) - src.astype(np.int16)).max())
        result.differs.append(f"{Path(file).name}: max |diff| {diff} levels")
    return result


def _written(out: Path) -> dict[str, str]:
    """Stage -> path of the files ``run_job`` wrote (read back from its manifest.json)."""
    import json

    data = json.loads((out / "manifest.json").read_text())
    return dict(data.get("outputs") or {})


def cache_summary(manifest: Any) -> tuple[int, int, list[str]]:
    """(stages cached, stages in all, generation stages that ran) of a run's manifest."""
    rows = manifest.stages
    hits = sum(1 for r in rows if r.status == "hit")
    ran = [r.name for r in rows if r.kind in GENERATION_KINDS and r.status != "hit"]
    return hits, len(rows), ran
