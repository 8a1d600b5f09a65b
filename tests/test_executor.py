"""The executor: plan first, run only misses, lazy inputs, damaged entries rebuilt."""

import numpy as np

from zitflow.executor import Executor, format_plan
from zitflow.recipe import build_graph


def graph(value=10, amount=5, amount2=1):
    return build_graph("demo", {
        "src": {"kind": "t_source", "value": value},
        "add": {"kind": "t_add", "input": "src", "amount": amount},
        "add2": {"kind": "t_add", "input": "add", "amount": amount2},
        "mean": {"kind": "t_mean", "input": "add"},
    })


def statuses(manifest):
    return {r.name: r.status for r in manifest.stages}


def test_first_run_runs_all_second_none(store, ctx, calls):
    m1 = Executor(graph(), store, ctx).execute()
    assert statuses(m1) == {"src": "run", "add": "run", "add2": "run", "mean": "run"}
    assert m1.outputs["add2"].pixels[0, 0, 0] == 16 and m1.outputs["mean"].value["mean"] == 15
    calls.clear()
    ex = Executor(graph(), store, ctx)
    assert all(p.hit for p in ex.planned.values())
    m2 = ex.execute()
    assert set(statuses(m2).values()) == {"hit"} and calls == {}
    assert np.array_equal(m2.outputs["add2"].pixels, m1.outputs["add2"].pixels)


def test_changing_one_param_reruns_exactly_downstream(store, ctx, calls):
    Executor(graph(), store, ctx).execute()
    calls.clear()
    m = Executor(graph(amount2=3), store, ctx).execute()
    assert statuses(m) == {"src": "hit", "add": "hit", "add2": "run", "mean": "hit"}
    assert calls == {"t_add": 1}  # add2 ran; its input came from the cache, src was never run
    calls.clear()
    m = Executor(graph(amount=6), store, ctx).execute()
    assert statuses(m) == {"src": "hit", "add": "run", "add2": "run", "mean": "run"}


def test_non_semantic_param_change_is_a_hit(store, ctx, calls):
    Executor(graph(), store, ctx).execute()
    g = build_graph("demo", {"src": {"kind": "t_source", "value": 10, "verbose": True},
                             "add": {"kind": "t_add", "input": "src", "amount": 5},
                             "add2": {"kind": "t_add", "input": "add", "amount": 1},
                             "mean": {"kind": "t_mean", "input": "add"}})
    calls.clear()
    assert set(statuses(Executor(g, store, ctx).execute()).values()) == {"hit"}


def test_only_needed_inputs_are_loaded(store, ctx, monkeypatch):
    Executor(graph(), store, ctx).execute()
    loaded = []
    real = store.load
    monkeypatch.setattr(store, "load", lambda key: loaded.append(key) or real(key))
    ex = Executor(graph(amount2=9), store, ctx)
    ex.execute()
    # add2 must run: it loads add; the sinks that hit (mean) and add2 itself are read/written,
    # but src (upstream of a hit) is never loaded.
    assert ex.planned["src"].key not in loaded
    assert ex.planned["add"].key in loaded


def test_damaged_entry_is_rebuilt_not_served(store, ctx, calls, caplog):
    ex = Executor(graph(), store, ctx)
    ex.execute()
    key = ex.planned["add"].key
    png = store.entry_dir(key) / "image.safetensors"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0x55
    png.write_bytes(bytes(data))
    calls.clear()
    m = Executor(graph(amount2=2), store, ctx).execute()  # add2 must run, so add is loaded
    st = statuses(m)
    assert st["add"] == "rebuilt" and st["add2"] == "run"
    assert "damaged" in caplog.text
    assert m.outputs["add2"].pixels[0, 0, 0] == 17
    assert store.load(key).pixels[0, 0, 0] == 15


def test_plan_table_shows_actions(store, ctx):
    ex = Executor(graph(), store, ctx)
    text = format_plan(ex.graph, ex.planned)
    assert text.count(" run") == 4 and "src" in text and "t_source" in text


def test_evicted_intermediate_under_cached_outputs_is_not_recomputed(store, ctx, calls):
    ex = Executor(graph(), store, ctx)
    ex.execute()
    store.remove(ex.planned["src"].key)  # gc evicted the source, its readers are still cached
    calls.clear()
    m = Executor(graph(), store, ctx).execute()
    assert statuses(m)["src"] == "skipped" and calls == {}
