"""Cache keys: one spelling per meaning, and only semantic params count."""

from zitflow.keys import normalise, stage_key
from zitflow.params import build_params, semantic_dict
from tests.conftest import SourceParams


def test_mapping_order_and_int_float_spelling_do_not_matter():
    a = stage_key("k", 1, {"x": 1.0, "y": [1, 2]}, {"image": "ab"})
    b = stage_key("k", 1, {"y": (1, 2), "x": 1}, {"image": "ab"})
    assert a == b


def test_every_ingredient_changes_the_key():
    base = dict(kind="k", version=1, params={"x": 1}, inputs={"i": "a"}, identity={"m": "1"})
    k0 = stage_key(**base)
    for change in ({"kind": "j"}, {"version": 2}, {"params": {"x": 2}}, {"inputs": {"i": "b"}},
                   {"identity": {"m": "2"}}):
        assert stage_key(**(base | change)) != k0, change


def test_unicode_is_nfc_normalised():
    assert normalise("e\u0301") == normalise("\u00e9")


def test_non_semantic_fields_stay_out():
    p1 = build_params(SourceParams, {"value": 3, "verbose": True})
    p2 = build_params(SourceParams, {"value": 3, "verbose": False})
    assert semantic_dict(p1) == semantic_dict(p2) == {"value": 3, "size": 8}
