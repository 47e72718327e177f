"""Memory of loading a model: the peak while TransformerLens folds and centres the
weights, and what the loaded model holds, against the checkpoint's weights.

    python benchmarks/load_memory.py [--dtypes float32,bfloat16] [--device cuda]

The model is the GPT-2-small shape (12 x 12, d_model 768, the real GPT-2 vocabulary:
124M parameters) with seeded random weights, saved with ``transformers``. Each dtype
loads in a fresh process (Linux: /proc's VmHWM and RssAnon): the peak is the rise of the
peak resident size over the resident size after the imports, and "held" the rise of the
anonymous resident size once loading has given back what it freed, of which the bridge's
parameters are a part (GPT-2's unembedding untied from its embedding to be centred, and
the q, k and v projections beside the fused one). With ``--device cuda`` the weights
are processed on the CPU (as on a CPU load) and then moved: the table gives the CPU's peak
as above, and the CUDA allocator's peak and what stays allocated, over what was before.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import gpt2_tokenizer  # noqa: E402  (the real GPT-2 tokenizer)

from circuitx.builtin.hf import save_causal_lm  # noqa: E402

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def proc_mib(field: str) -> float:
    """A field of /proc/self/status, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status: this benchmark reads Linux's")


def checkpoint_numel(model_dir: Path) -> int:
    """The number of weights the checkpoint stores (GPT-2's tied embedding once)."""
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as weights:
            total += sum(
                torch.Size(weights.get_slice(key).get_shape()).numel() for key in weights.keys()
            )
    return total


def load_step(model_dir: str, dtype: str, device: str) -> None:
    """Load once in this fresh process; print the memory as one JSON line."""
    from circuitx.models.loading import load_model

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        allocated = torch.cuda.memory_allocated() / 2**20
    resident, anonymous = proc_mib("VmRSS"), proc_mib("RssAnon")
    model = load_model(model_dir, device=device, dtype=dtype)
    tensors = {t.data_ptr(): t for t in model.bridge.parameters()}.values()  # each once
    result = {
        "peak_mib": proc_mib("VmHWM") - resident,
        "held_mib": proc_mib("RssAnon") - anonymous,
        "parameters_mib": sum(t.numel() * t.element_size() for t in tensors) / 2**20,
    }
    if cuda:
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 - allocated
        result["gpu_held_mib"] = torch.cuda.memory_allocated() / 2**20 - allocated
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--step-dir", help=argparse.SUPPRESS)  # the child's model
    parser.add_argument("--step-dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here")
    if args.step_dir:
        load_step(args.step_dir, args.step_dtype, args.device)
        return
    print(
        f"{platform.machine()}, torch {torch.__version__}; GPT-2-small shape (124M "
        f"parameters), each load in a fresh process on {args.device}\n"
    )
    cuda = args.device.startswith("cuda")
    heading = (
        "| dtype | weights (MiB) | peak while loading (MiB) | x weights | held (MiB) | x weights "
    )
    heading += "| of it parameters (MiB) |"
    if cuda:
        heading += " GPU peak (MiB) | x weights | GPU held (MiB) | x weights |"
    print(heading)
    print("|---" * heading.count(" | ") + "|---|")
    with tempfile.TemporaryDirectory() as tmp:
        save_causal_lm(Path(tmp), "gpt2", gpt2_tokenizer(), 12, 12, 768, 0)
        for dtype in args.dtypes.split(","):
            command = [sys.executable, __file__, "--step-dir", tmp, "--step-dtype", dtype]
            command += ["--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"loading in {dtype} failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            weights = checkpoint_numel(Path(tmp)) * BYTES[dtype] / 2**20
            peak, held = result["peak_mib"], result["held_mib"]
            row = (
                f"| {dtype} | {weights:.0f} | {peak:.0f} | {peak / weights:.1f} | "
                f"{held:.0f} | {held / weights:.1f} | {result['parameters_mib']:.0f} |"
            )
            if cuda:
                gpu_peak, gpu_held = result["gpu_peak_mib"], result["gpu_held_mib"]
                row += f" {gpu_peak:.0f} | {gpu_peak / weights:.1f} | {gpu_held:.0f} | "
                row += f"{gpu_held / weights:.1f} |"
            print(row)


if __name__ == "__main__":
    main()
