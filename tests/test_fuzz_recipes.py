"""Fuzzed stage parameters: every case builds, or fails with one RecipeError naming the field."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zitflow.recipe import RecipeError, build_graph
from zitflow.registry import kinds

WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.just("x" * 10_000), st.just("🎨🖼️ مرحبا بالعالم"), st.just("../../etc/passwd"),
    st.just("C:\\Windows\\system32"), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def kind_names():
    return sorted(kinds())


@st.composite
def stage_entries(draw):
    kind = draw(st.sampled_from(kind_names()))
    cls = kinds()[kind]
    fields = [f.name for f in dataclasses.fields(cls.Params)]
    entry = {"kind": kind}
    for name in draw(st.lists(st.sampled_from(fields + ["bogus_field"]), max_size=4, unique=True)) if fields else []:
        entry[name] = draw(WEIRD)
    return kind, entry


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage_entries())
def test_any_params_build_or_fail_clearly(kind_entry):
    kind, entry = kind_entry
    cls = kinds()[kind]
    stages = {}
    inputs = {}
    for slot, art in cls.inputs.items():
        src = _source_for(art)
        if src is None:
            return
        stages[f"src_{slot}"] = src
        inputs[slot] = f"src_{slot}"
    stages["s"] = dict(entry, inputs=inputs)
    try:
        build_graph("fuzz", stages)
    except RecipeError as e:
        msg = str(e)
        assert msg.startswith("recipe 'fuzz'") and ("stage 's'" in msg or "stage 'src_" in msg), msg
        assert "Traceback" not in msg


def _source_for(art):
    """A source stage entry giving artifact type ``art`` (an image from conftest's t_source);
    kinds that read other artifact types are covered by their own tests."""
    from zitflow.artifacts import Image

    return {"kind": "t_source"} if art is Image else None
