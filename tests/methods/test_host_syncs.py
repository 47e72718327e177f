"""GPU readiness: no method reads a value computed on the device back to the host in an
inner loop (issue 24).

There is no GPU here, so the device is emulated: a torch function mode follows which
tensors would live on the accelerator if the model ran on one (its weights, tensors
moved ``.to`` a device or made on one, everything computed from them) and counts every
read of such a tensor on the host (``.item()``, ``.cpu()``, ``.tolist()``, ``bool()``,
``float()``, ``int()``...), each a synchronisation on a GPU. A method may read back a few
results, or one per patched pass where its next step depends on the value (ACDC keeps
or removes each edge by it); not one per head, group, layer or step.
"""

from __future__ import annotations

import collections
import traceback
import weakref

import pytest
import torch
from conftest import random_transcoder_dir
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from circuitx.builtin import load as load_model
from circuitx.engine import Engine
from circuitx.methods import METHODS, MethodRun, get_method, method_options
from circuitx.methods.learned_masks import REPORT_EVERY
from circuitx.models import Model
from circuitx.tasks import get_task

HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"}
FACTORIES = {
    "zeros", "ones", "empty", "full", "arange", "tensor", "rand", "randn", "randint", "eye",
}  # fmt: skip


class EmulatedDevice(TorchFunctionMode):
    """Which tensors would be on the device, and where the host reads them.

    A tensor is on the device when it is one of ``resident``, came from ``.to(device)``
    or a factory given a ``torch.device`` (a copy, when it was on the host), or was
    computed from one (not by an in-place op, which leaves its target where it was);
    ``.cpu()`` gives a host copy. ``reads`` counts host reads, and device values written
    into host tensors, by the circuitx line that made them."""

    def __init__(self, resident: list[torch.Tensor]) -> None:
        super().__init__()
        self.on_device: dict[int, weakref.ref] = {}
        self.reads: collections.Counter[str] = collections.Counter()
        for tensor in resident:
            self._place(tensor)

    def _place(self, tensor: torch.Tensor) -> None:
        self.on_device[id(tensor)] = weakref.ref(tensor)

    def resident(self, tensor: object) -> bool:
        if not isinstance(tensor, torch.Tensor):
            return False
        ref = self.on_device.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        in_place = name.endswith("_") and not name.startswith("__")
        writes_host = (name == "__setitem__" or in_place) and args
        if name in HOST_READS and args and self.resident(args[0]):
            self.reads[_caller()] += 1
        elif writes_host and not self.resident(args[0]) and any(map(self.resident, inputs)):
            self.reads[_caller()] += 1  # a device value copied into a host tensor
        out = func(*args, **kwargs)
        if name == "cpu":
            return out.clone() if out is args[0] else out
        moved = name == "to" and any(
            isinstance(a, (str, torch.device, torch.Tensor))
            for a in (*args[1:], kwargs.get("device"))
        )
        made = name in FACTORIES and isinstance(kwargs.get("device"), torch.device)
        if moved and not self.resident(args[0]):
            out = out.clone() if out is args[0] else out
        if moved or made or (any(map(self.resident, inputs)) and not in_place):
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor):
                    self._place(tensor)
        return out


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):  # not this, not the mode
        if "/circuitx/" in frame.filename:
            return f"{frame.filename.split('/circuitx/')[-1]}:{frame.lineno}"
    return "outside circuitx"


def test_the_emulated_device_counts_host_reads_of_device_values_only():
    weight = torch.randn(3, 3)
    with EmulatedDevice([weight]) as device:
        host = torch.ones(3)
        assert bool(host.any()) and int(host.sum()) == 3  # host bookkeeping: free
        moved = host.to(weight.device)
        made = torch.zeros(2, device=weight.device)
        host.add_(1.0)
        float(moved.sum()), (weight @ host).tolist(), made.cpu().tolist()
        host.add_(weight[0])  # in place: host stays on the host, and that is a copy
        bool(host.any())
        host[0] = moved[1]
    assert sum(device.reads.values()) == 5


@pytest.fixture(scope="module")
def model():
    return load_model("planted-greater-than", device="cpu")


@pytest.fixture(scope="module")
def transcoders(tmp_path_factory):
    return random_transcoder_dir(tmp_path_factory.mktemp("transcoders"))


@pytest.mark.parametrize("method", METHODS)
def test_host_reads_do_not_grow_with_heads_layers_or_steps(model, transcoders, method, monkeypatch):
    passes = []
    run_from = Model.run_from
    monkeypatch.setattr(
        Model, "run_from", lambda *args, **kwargs: passes.append(1) or run_from(*args, **kwargs)
    )
    task = get_task("greater-than")
    data = task.make_data(model, 8, seed=1)
    chosen = get_method(method)
    given = {"transcoders": transcoders} if method == "transcoder" else {}
    given |= {"sae_steps": 60} if method == "sae" else {}
    # past one report (REPORT_EVERY steps): a read each step would pass the bound below
    given |= {"sp_steps": 60} if method == "subnetwork-probing" else {}
    given |= {"ep_steps": 60} if method == "edge-pruning" else {}
    options = method_options(chosen, given)
    run = MethodRun(threshold=chosen.default_threshold, options=options)
    with EmulatedDevice([*model.bridge.parameters(), *model.bridge.buffers()]) as device:
        engine = Engine(model, task, data, metric="prob-diff", kept=chosen.kept_hooks(model, run))
        device.reads.clear()
        passes.clear()
        scores = chosen.score(engine, run)
    reads = sum(device.reads.values())
    if method == "acdc":  # one per tried edge or whole input: whether it stays removed
        tried = scores.facts["acdc_edges_tried"] + scores.facts["acdc_inputs_tried"]
        assert reads == tried + 1, device.reads  # + the start
    elif method == "path-patching":  # one per stage: the next stage's receivers
        assert reads <= scores.facts["path_patching_stages"], device.reads
    elif method in ("subnetwork-probing", "edge-pruning"):  # the progress bar's loss every
        steps = options["sp_steps" if method == "subnetwork-probing" else "ep_steps"]
        assert reads <= 2 * (steps // REPORT_EVERY + 1) + 2, device.reads  # REPORT_EVERY steps
    elif method == "hisp":  # and the zero-ablated engine its gate needs reads its
        # metrics and accuracies once as it is built (5 reads), whatever the model's size
        assert reads <= 4 + 5, device.reads
    else:
        assert reads <= 4, device.reads
    assert len(passes) > 0 or method in ("cdt", "sae", "transcoder")
