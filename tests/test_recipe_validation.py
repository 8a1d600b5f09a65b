"""Recipes fail before running, with one message naming recipe, stage, field, value, allowed."""

import pytest

from zitflow.recipe import RecipeError, build_graph, check_schema

CHAIN = {
    "src": {"kind": "t_source", "value": 10},
    "add": {"kind": "t_add", "input": "src", "amount": 5},
}


def err(stages, allow=()):
    with pytest.raises(RecipeError) as e:
        build_graph("demo", stages, allow)
    return str(e.value)


def test_valid_chain_orders_stages():
    g = build_graph("demo", {"add": CHAIN["add"], "src": CHAIN["src"]})
    assert g.order() == ["src", "add"]
    assert g.stages["add"].params.amount == 5


def test_typo_in_field_names_recipe_stage_field_and_allowed():
    msg = err({"src": {"kind": "t_source", "valeu": 3}})
    assert "recipe 'demo'" in msg and "stage 'src'" in msg and "field 'valeu'" in msg
    assert "unknown field" in msg and "value" in msg and "size" in msg


def test_wrong_type_names_value_and_type():
    msg = err({"src": {"kind": "t_source", "value": "bright"}})
    assert "stage 'src'" in msg and "field 'value'" in msg and "bright" in msg and "int" in msg


def test_out_of_range_names_bounds():
    msg = err({"src": {"kind": "t_source", "value": 300}})
    assert "field 'value'" in msg and "got 300" in msg and "value <= 255" in msg


def test_nan_is_refused():
    msg = err({"src": CHAIN["src"], "add": {"kind": "t_add", "input": "src", "amount": float("nan")}})
    assert "field 'amount'" in msg


def test_unknown_kind_lists_known_kinds():
    msg = err({"src": {"kind": "t_sorce"}})
    assert "unknown kind 't_sorce'" in msg and "t_source" in msg and "stage 'src'" in msg


def test_missing_input_stage():
    msg = err({"add": {"kind": "t_add", "input": "nowhere"}})
    assert "stage 'add'" in msg and "no stage named 'nowhere'" in msg


def test_unconnected_required_input():
    msg = err({"add": {"kind": "t_add"}})
    assert "stage 'add'" in msg and "needs input(s) image" in msg


def test_unknown_input_slot():
    msg = err({"src": CHAIN["src"], "add": {"kind": "t_add", "inputs": {"imgae": "src"}}})
    assert "no input 'imgae'" in msg and "its inputs: image" in msg


def test_cycle_is_refused():
    msg = err({"a": {"kind": "t_add", "input": "b"}, "b": {"kind": "t_add", "input": "a"}})
    assert "cycle" in msg and "a" in msg and "b" in msg


def test_wrong_artifact_type_between_stages():
    msg = err({"src": CHAIN["src"], "m": {"kind": "t_mean", "input": "src"},
               "add": {"kind": "t_add", "input": "m"}})
    assert "stage 'add'" in msg and "expects image" in msg and "gives data" in msg


def test_disabled_stage_passes_its_input_on():
    stages = {**CHAIN, "add2": {"kind": "t_add", "input": "add", "amount": 1}}
    stages["add"] = {**CHAIN["add"], "enabled": False}
    g = build_graph("demo", stages)
    assert list(g.stages) == ["src", "add2"] and g.stages["add2"].inputs == {"image": "src"}


def test_target_needs_allow_list():
    stages = {"src": {"_target_": "tests.conftest.TestSource"}}
    msg = err(stages)
    assert "not allowed" in msg and "allow_modules" in msg
    g = build_graph("demo", stages, ["tests"])
    assert g.stages["src"].kind == "t_source"


def test_target_must_be_a_stage():
    msg = err({"src": {"_target_": "os.system"}}, allow=["os"])
    assert "not a zitflow Stage" in msg


def test_prefix_of_a_module_name_is_not_allowed():
    msg = err({"src": {"_target_": "testsevil.Stage"}}, allow=["tests"])
    assert "not allowed" in msg


def test_schema_version():
    check_schema("demo", 1)
    with pytest.raises(RecipeError, match="declare 'schema_version: 1'"):
        check_schema("demo", None)
    with pytest.raises(RecipeError, match="written for recipe schema 0"):
        check_schema("demo", 0)


def test_disabled_stage_with_two_inputs_passes_on_the_one_of_its_output_type():
    """A disabled fit (inputs image and size) hands its image on; the size plan is not an image."""
    stages = {
        "src": {"kind": "t_source"},
        "size": {"kind": "resolution", "width": 64, "height": 64},
        "fit": {"kind": "fit", "inputs": {"image": "src", "size": "size"}, "enabled": False},
        "add": {"kind": "t_add", "input": "fit"},
    }
    g = build_graph("demo", stages)
    assert "fit" not in g.stages and g.stages["add"].inputs == {"image": "src"}
