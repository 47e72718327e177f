"""The Python API in a long session: a call runs as in a fresh process whatever the caller
set, gives the caller's state back, and keeps what it warned of (a helper's trial 39)."""

from __future__ import annotations

import warnings

import pytest
import torch

import circuitx as cx
from circuitx.graph import edges_by_name


@pytest.fixture(scope="module")
def model():
    return cx.load_model("planted-ioi")


def find(model, method: str = "eap", **settings):
    return cx.discover(model, "ioi", method, n_prompts=6, faithfulness=False, **settings)


def scores(graph) -> dict:
    return {key: (d["score"], d["in_circuit"]) for key, d in edges_by_name(graph).items()}


def test_loading_keeps_the_callers_random_state():
    """Booting the bridge drew from torch's generator: a GPT-2 load moved it."""
    torch.manual_seed(777)
    expected = torch.rand(3)
    torch.manual_seed(777)
    cx.load_model("planted-greater-than")
    assert torch.equal(torch.rand(3), expected)


def test_discover_seeds_no_gpu_and_gives_the_random_state_back(model, monkeypatch):
    """torch.manual_seed reseeds every GPU's generator too, which fork_rng(devices=[])
    does not give back: only the CPU's is seeded."""
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    find(model)
    assert torch.equal(torch.rand(2), expected) and seeded == []


def test_the_callers_hook_flags_and_default_dtype_change_nothing(model):
    """A trial: split q/k/v left on moved every method's scores (ACDC's by 1e-3); a float64
    default moved the learned masks' and failed the SAE with a RuntimeError."""
    plain = scores(find(model, "acdc"))
    sae = scores(find(model, "sae"))
    model.bridge.set_use_split_qkv_input(True)
    model.bridge.set_use_attn_result(True)
    try:
        assert scores(find(model, "acdc")) == plain
        assert model.bridge.cfg.use_split_qkv_input and model.bridge.cfg.use_attn_result
    finally:
        model.bridge.set_use_split_qkv_input(False)
        model.bridge.set_use_attn_result(False)
    torch.set_default_dtype(torch.float64)
    try:
        assert scores(find(model, "sae")) == sae
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)


def test_the_callers_hooks_are_named_in_the_warning_the_graph_and_an_error(model):
    plain = scores(find(model))
    model.bridge.add_hook("blocks.2.hook_resid_pre", lambda t, hook: t * 0.9)
    try:
        with pytest.warns(cx.CircuitxWarning, match=r"hooks of your own \(at blocks.2.hook_in"):
            graph = find(model)
        assert graph.graph["caller_hooks"] == ["blocks.2.hook_in = blocks.2.hook_resid_pre"]
        assert scores(graph) != plain  # the hooked model's circuit
        model.bridge.reset_hooks()
        model.bridge.add_hook("blocks.2.hook_resid_pre", lambda t, hook: t * 0)
        with pytest.raises(
            cx.CircuitxError, match=r"no effect to attribute .*; the model holds hooks"
        ):
            find(model)
    finally:
        model.bridge.reset_hooks()
    assert scores(find(model)) == plain and "caller_hooks" not in find(model).graph
    # a torch hook of the caller's on a module (a trial's zeroed attention went unsaid);
    # TransformerLens's own hooks on its blocks are not the caller's
    handle = model.bridge.blocks[3].attn.register_forward_hook(lambda module, args, out: out)
    try:
        with pytest.warns(cx.CircuitxWarning, match=r"hooks of your own \(at blocks.3.*attn\)"):
            find(model)
    finally:
        handle.remove()
    assert model.hooked_points() == []


def test_a_warning_python_shows_once_is_kept_in_each_graph(model):
    """In a loop the default filter showed the first empty circuit's warning alone."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        graphs = [find(model, method, threshold=100.0) for method in ("eap", "atp")]
    assert sum("no component is in the circuit" in str(w.message) for w in shown) == 1
    for graph in graphs:
        assert any("no component is in the circuit" in line for line in graph.graph["warnings"])
