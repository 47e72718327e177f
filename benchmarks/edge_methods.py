"""Time and peak memory of the edge-level methods, as ratios to one forward+backward pass.

    python benchmarks/edge_methods.py [--n-prompts 100] [--device cpu] [--skip-acdc]

Part 1: a GPT-2-small-shaped random model (12 x 12, d_model 768, the real GPT-2
tokenizer from ../shared/tokenizers/gpt2) on IOI. The floor is one forward and one
backward pass of the plain model (gradient of the metric with respect to the
embeddings). Each method's time is its scoring on an engine whose clean and corrupted
runs are cached (the caching is its own row); faithfulness is not included.
Part 2: ACDC on the planted IOI model, whose 1000-odd edges it tries one by one.

Peak memory is the rise of the process's peak resident memory during a step (Linux
/proc; reset before each step), or of the CUDA allocator's peak on a GPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import save_tiny_gpt2  # noqa: E402  (the tests' model builder)

from circuitx.graph import full_graph  # noqa: E402
from circuitx.methods import MethodRun, get_method, method_options  # noqa: E402
from circuitx.models import EMBED_OUTPUT_HOOK, Model, load_model  # noqa: E402
from circuitx.patching import PatchingEngine  # noqa: E402
from circuitx.tasks import get_task  # noqa: E402


def _proc_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(step: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """Seconds and peak extra memory (MiB) of ``step()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size
        except OSError:
            pass
        base = _proc_kib("VmRSS")
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        return seconds, (torch.cuda.max_memory_allocated() - base) / 2**20
    peak = _proc_kib("VmHWM")
    return seconds, None if peak is None or base is None else (peak - base) / 1024


def forward_backward(model: Model, task, data) -> None:
    """The floor: one forward and one backward pass, gradient at the embeddings."""
    leaf = {}

    def embed(x: torch.Tensor) -> torch.Tensor:
        leaf["x"] = x.detach().requires_grad_(True)
        return leaf["x"]

    final = model.run(data.clean, [(EMBED_OUTPUT_HOOK, embed)], data.positions["END"], grad=True)
    task.metric("logit-diff", final, data, final).mean().backward()


def method_step(engine: PatchingEngine, name: str, model: Model) -> Callable[[], object]:
    method = get_method(name)
    run = MethodRun(threshold=method.default_threshold, options=method_options(method))
    graph = full_graph(model.n_layers, model.n_heads, model.has_mlp)
    return lambda: method.score(engine, graph, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-acdc", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    task = get_task("ioi")
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_gpt2(Path(tmp), 12, 12, 768, seed=0)
        model = load_model(tmp, device=args.device)
        data = task.make_data(model, args.n_prompts, seed=0)
        forward_backward(model, task, data)  # warm-up
        floor, floor_mib = measure(lambda: forward_backward(model, task, data), device)
        rows.append(("forward + backward (floor)", floor, floor_mib))
        holder = {}
        seconds, mib = measure(lambda: holder.update(e=PatchingEngine(model, task, data)), device)
        rows.append(("engine: cache clean + corrupted runs", seconds, mib))
        engine = holder["e"]
        for name in ("eap", "eap-ig", "path-patching"):
            seconds, mib = measure(method_step(engine, name, model), device)
            rows.append((name, seconds, mib))
        shape = f"{data.clean.shape[0]} prompts x {data.clean.shape[1]} tokens"
    print(
        f"## GPT-2-small-shaped random model (12 x 12, d_model 768), IOI, {shape}\n\n"
        f"{platform.processor() or platform.machine()}, device {args.device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    _table(rows, floor, floor_mib)
    if args.skip_acdc:
        return
    planted = load_model("planted-ioi", device=args.device)
    data = task.make_data(planted, args.n_prompts, seed=0)
    forward_backward(planted, task, data)
    floor, floor_mib = measure(lambda: forward_backward(planted, task, data), device)
    engine = PatchingEngine(planted, task, data)
    seconds, mib = measure(method_step(engine, "acdc", planted), device)
    edges = engine.layout.valid.sum()
    print(
        f"\n## planted-ioi (5 x 4, d_model 320, {int(edges)} edges), IOI, "
        f"{data.clean.shape[0]} prompts x {data.clean.shape[1]} tokens\n"
    )
    _table(
        [("forward + backward (floor)", floor, floor_mib), ("acdc", seconds, mib)], floor, floor_mib
    )


def _table(rows, floor: float, floor_mib: float | None) -> None:
    print("| step | time (s) | x floor | peak memory (MiB) | x floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, mib in rows:
        mem = "-" if mib is None else f"{mib:.0f}"
        mem_ratio = "-" if mib is None or not floor_mib else f"{mib / floor_mib:.1f}"
        print(f"| {name} | {seconds:.2f} | {seconds / floor:.1f} | {mem} | {mem_ratio} |")


if __name__ == "__main__":
    main()
