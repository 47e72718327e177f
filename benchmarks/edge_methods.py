"""Time and peak memory of the edge-level methods, as ratios to one forward+backward pass.

    python benchmarks/edge_methods.py [--n-prompts 100] [--path-stages 1] [--device cpu] [--skip-acdc]
        [--only hisp,eap-ig-activations]

Part 1: a GPT-2-small-shaped random model (12 x 12, d_model 768, the real GPT-2
tokenizer from ../shared/tokenizers/gpt2; set CIRCUITX_SHARED where shared/ lives
elsewhere) on IOI. The floor is one forward and one
backward pass of the plain model (gradient of the metric with respect to the
embeddings). Each method's time is its scoring on an engine whose clean and corrupted
runs are cached in one part (the caching is its own row), except one EAP row that caches
and scores in parts as ``discover`` does under the default memory budget; faithfulness
is its own row (the report
discovery writes, on EAP's circuit and ranking), and so is the whole ``circuitx discover
--method eap`` in its own process (loading the model, caching, EAP, faithfulness). Path
patching runs ``--path-stages`` stages (default 1, the direct paths to the logits): on a
random model the clean-corrupted gap is near zero, so nearly every node passes the
threshold and each later stage patches every sender into every found node's inputs.
Part 2: ACDC on the planted IOI model, whose 761 edges it tries one by one.
``--only`` measures the floor, one forward pass and the steps named (ACDC among them
runs part 2): the methods past the first eight (HISP, EAP-IG's other modes, AtP* and
EAP's fixes, the learned masks) are measured so, EAP-IG over activations and the learned
masks on fewer prompts.

Each step runs in a fresh process after a warm-up pass on two prompts (the floor and the
forward pass three times over, their median time taken); its peak memory
is the rise of the peak resident size over the resident size before it (Linux /proc; the
peak is reset first, and the memory glibc keeps free is given back first, so that blocks
freed by the set-up and reused by the step count), or the CUDA allocator's peak on a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import tiny_gpt2  # noqa: E402  (the tests' model builder)

from circuitx import builtin
from circuitx.builtin import load as load_model
from circuitx.discovery.faithfulness import edge_ranking, faithfulness_report
from circuitx.discovery.run import select
from circuitx.engine import Engine, default_max_memory, memory_plan
from circuitx.layout import Layout
from circuitx.methods import MethodRun, get_method, method_options
from circuitx.models import EMBED_OUTPUT_HOOK, Model
from circuitx.models.loading import release_freed_memory
from circuitx.tasks import get_task


def _proc_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(step: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """Seconds and peak extra memory (MiB) of ``step()`` in this fresh process: the CUDA
    allocator's peak, or the rise of the peak resident size over the resident size before."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        gc.collect()  # what earlier steps left in cycles, at any age
        release_freed_memory(device)
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak resident size := current
        except OSError:
            pass
    base = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else _proc_mib("VmRSS")
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**20 - base
    seconds = time.perf_counter() - start
    peak = _proc_mib("VmHWM")
    return seconds, None if peak is None or base is None else peak - base


def measure_unit(step: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """A unit's seconds and peak memory: the median time of three runs (one pass's time
    moves by a fifth between processes here) and the first's memory (before the
    allocator holds any of it)."""
    runs = [measure(step, device) for _ in range(3)]
    return statistics.median(seconds for seconds, _ in runs), runs[0][1]


def forward_backward(model: Model, task, data) -> None:
    """The floor: one forward and one backward pass, gradient at the embeddings."""
    leaf = {}

    def embed(x: torch.Tensor) -> torch.Tensor:
        leaf["x"] = x.detach().requires_grad_(True)
        return leaf["x"]

    final = model.run(data.clean, [(EMBED_OUTPUT_HOOK, embed)], data.positions["END"], grad=True)
    task.metric("logit-diff", final, data, final).mean().backward()


def one_batch(model: Model, task, data) -> Engine:
    """The engine on all prompts in one part, as the floor runs them."""
    return Engine(model, task, data, part_size=data.n_prompts)


def method_step(engine: Engine, step: str, **options) -> Callable[[], object]:
    name, fixed = METHOD_STEPS[step]
    options = {**fixed, **options}
    method = get_method(name)
    run = MethodRun(threshold=method.default_threshold, options=method_options(method, options))
    return lambda: method.score(engine, run)


def eap_in_parts(model: Model, task, data) -> Callable[[], object]:
    """Caching and EAP as ``discover`` runs them: the prompts in parts sized to the
    default memory budget (the engine's rebuilds of parts it cannot keep included)."""
    method = get_method("eap")
    run = MethodRun(threshold=method.default_threshold, options=method_options(method, {}))
    working = method.working_floats_per_token(model, run)
    return lambda: method.score(Engine(model, task, data, working_floats_per_token=working), run)


def parts_label(model: Model, task, data) -> str:
    """How the default budget splits the prompts (the plan ``eap_in_parts`` runs)."""
    method = get_method("eap")
    run = MethodRun(threshold=method.default_threshold, options=method_options(method, {}))
    budget = default_max_memory(model.device)
    n, width = data.clean.shape
    working = method.working_floats_per_token(model, run)
    plan = memory_plan(model, n, width, data.rows_per_prompt, budget, working)
    parts = -(-n // plan.part_size)
    return f"{parts} parts of {plan.part_size} prompts, budget {budget / 2**30:.1f} GiB"


UNITS = ("floor", "forward")  # what every other step is measured against
STEPS = (
    "floor",
    "forward",
    "engine",
    "eap",
    "eap-in-parts",
    "eap-ig",
    "path-patching",
    "faithfulness",
    "cli",
    "acdc",
)
GPT2_STEPS = STEPS[:-1]
# steps that score with a method: (method, its options)
METHOD_STEPS = {
    "eap": ("eap", {}),
    "eap-ig": ("eap-ig", {}),
    "path-patching": ("path-patching", {}),
    "acdc": ("acdc", {}),
    "cdt": ("cdt", {}),  # benchmarks/cdt.py's and sae.py's steps
    "sae": ("sae", {}),
    "hisp": ("hisp", {}),
    "eap-ig-activations": ("eap-ig", {"ig_mode": "activations"}),
    "eap-ig-clean-corrupted": ("eap-ig", {"ig_mode": "clean-corrupted"}),
    "subnetwork-probing": ("subnetwork-probing", {}),
    "atp": ("atp", {}),
    "eap-qk-fix": ("eap", {"qk_fix": "on"}),
    "eap-grad-drop": ("eap", {"grad_drop": "on"}),
    "edge-pruning": ("edge-pruning", {"ep_steps": 10}),  # its cost is per step
}
EXTRA_STEPS = (
    "hisp",
    "eap-ig-activations",
    "eap-ig-clean-corrupted",
    "subnetwork-probing",
    "atp",
    "eap-qk-fix",
    "eap-grad-drop",
    "edge-pruning",
)


def forward(model: Model, data) -> None:
    """One forward pass of the plain model, no gradients."""
    with torch.no_grad():
        model.run(data.clean, [], data.positions["END"])


def faithfulness_step(engine: Engine, model: Model) -> Callable[[], object]:
    """The faithfulness report discovery writes: EAP's circuit (its default threshold)
    and MIB's curve over its ranking."""
    method = get_method("eap")
    run = MethodRun(threshold=method.default_threshold, options=method_options(method, {}))
    scores = method.score(engine, run)
    ranking = edge_ranking(model.layout, scores)
    _, kept = select(model.layout, scores, "edge", method.default_threshold, None)
    return lambda: faithfulness_report(engine, kept, ranking)


def cli_step(model_dir: str, args: argparse.Namespace) -> Callable[[], object]:
    """``circuitx discover --method eap`` end to end in its own process, faithfulness
    included (the model's loading too)."""
    command = [sys.executable, "-m", "circuitx", "discover", "--task", "ioi", "--method", "eap"]
    command += ["--model", model_dir, "--n-prompts", str(args.n_prompts), "--device", args.device]
    command += ["--json"]
    return lambda: subprocess.run(command, capture_output=True, check=True)


def run_step(step: str, model_dir: str, args: argparse.Namespace) -> dict:
    """One step in this (fresh) process: its time and peak memory, and the batch shape."""
    device = torch.device(args.device)
    task = get_task("ioi")
    model = load_model(model_dir, device=args.device)
    data = task.make_data(model, args.n_prompts, seed=0)
    forward_backward(model, task, task.make_data(model, 2, seed=1))  # warm-up, small batch
    if step == "floor":
        action = lambda: forward_backward(model, task, data)
    elif step == "forward":
        action = lambda: forward(model, data)
    elif step == "cli":
        action = cli_step(model_dir, args)
    elif step == "engine":
        action = lambda: one_batch(model, task, data)
    elif step == "eap-in-parts":
        action = eap_in_parts(model, task, data)
    else:
        engine = one_batch(model, task, data)
        options = {"stages": args.path_stages} if step == "path-patching" else {}
        if step == "faithfulness":
            action = faithfulness_step(engine, model)
        else:
            action = method_step(engine, step, **options)
    seconds, mib = (measure_unit if step in UNITS else measure)(action, device)
    result = {"seconds": seconds, "mib": mib, "shape": list(data.clean.shape)}
    if step == "eap-in-parts":
        result["parts"] = parts_label(model, task, data)
    if step == "cli":  # its memory is the child's: its whole peak resident size
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result.update(mib=None, resident_mib=peak_kib / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--path-stages", type=int, default=1)
    parser.add_argument("--skip-acdc", action="store_true")
    parser.add_argument(
        "--only", help="comma-separated steps, besides the floor and one forward pass: "
        + ", ".join(s for s in (*STEPS, *EXTRA_STEPS) if s not in ("floor", "forward")),
    )  # fmt: skip
    parser.add_argument("--step", choices=(*STEPS, *EXTRA_STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.model_dir, args)))
        return

    options = ["--n-prompts", str(args.n_prompts), "--device", args.device]
    options += ["--path-stages", str(args.path_stages)]

    def in_subprocess(step: str, model_dir: str) -> dict:
        return in_fresh_process(__file__, step, model_dir, options)

    chosen = list(GPT2_STEPS)
    if args.only:
        chosen = ["floor", "forward", *(s for s in args.only.split(",") if s != "acdc")]
        args.skip_acdc = "acdc" not in args.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tiny_gpt2(Path(tmp), 12, 12, 768, seed=0)
        results = {step: in_subprocess(step, tmp) for step in chosen}
    print(gpt2_small_heading(results["floor"]["shape"], args.device))
    n = results["floor"]["shape"][0]
    labels = {
        "floor": "forward + backward (floor)",
        "forward": "one forward pass",
        "engine": "engine: cache clean + corrupted runs",
        "eap-in-parts": "engine + eap in parts as discover runs them ("
        + results.get("eap-in-parts", {}).get("parts", "-")
        + ")",
        "path-patching": f"path-patching, {args.path_stages} stage(s)",
        "faithfulness": "faithfulness: EAP's circuit and the 10-point curve",
        "cli": f"circuitx discover --method eap --n-prompts {n}, end to end (own process"
        + cli_peak(results.get("cli"))
        + ")",
    }
    _table([(labels.get(step, step), results[step]) for step in chosen], results["floor"])
    print()
    for step in chosen[2:]:
        forwards = results[step]["seconds"] / results["forward"]["seconds"]
        print(f"{step} = {forwards:.1f} forward passes")
    if args.skip_acdc:
        return
    planted = str(builtin.model_dir("planted-ioi"))
    results = {step: in_subprocess(step, planted) for step in ("floor", "acdc")}
    edges = Layout(5, 4, True).valid.sum()
    print(f"\n## planted-ioi (5 x 4, d_model 320, {int(edges)} edges), IOI, {n} prompts\n")
    _table([(labels.get(s, s), results[s]) for s in ("floor", "acdc")], results["floor"])


def in_fresh_process(script: str, step: str, model_dir: str, options: list[str]) -> dict:
    """Run ``script --step step`` in a new Python process and return the JSON it prints."""
    command = [sys.executable, script, "--step", step, "--model-dir", model_dir, *options]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:  # the child's own last lines say why
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"step {step} failed (exit {done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpt2_small_heading(shape: list[int], device: str) -> str:
    """The heading of a table measured on the GPT-2-small-shaped random model."""
    n, width = shape
    return (
        f"## GPT-2-small-shaped random model (12 x 12, d_model 768), IOI, {n} prompts x "
        f"{width} tokens\n\n{platform.machine()}, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; each step in a fresh "
        "process\n"
    )


def cli_peak(result: dict | None) -> str:
    """The CLI's whole peak resident size, for its row's label (Python, torch, the model
    and its work: not a rise over a baseline as the other rows' memory)."""
    if not result or result.get("resident_mib") is None:
        return ""
    return f"; peak resident size {result['resident_mib'] / 1024:.1f} GiB"


def _table(rows: list[tuple[str, dict]], floor: dict) -> None:
    print("| step | time (s) | x floor | peak memory (MiB) | x floor |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in rows:
        seconds, mib = result["seconds"], result["mib"]
        mem = "-" if mib is None else f"{mib:.0f}"
        mem_ratio = "-" if mib is None or not floor["mib"] else f"{mib / floor['mib']:.1f}"
        print(
            f"| {name} | {seconds:.2f} | {seconds / floor['seconds']:.1f} | {mem} | {mem_ratio} |"
        )


if __name__ == "__main__":
    main()
