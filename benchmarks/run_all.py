"""The leaderboards (planted, hard planted, tracr and trained models) and the methods'
timing runs in one command; writes benchmarks/RESULTS.md (rewritten after each part,
atomically) and the leaderboards' folders, in the repository: hours on a 2-core CPU. The
tracr models against the ACDC paper's numbers are
benchmarks/tracr_paper.py's own run (benchmarks/tracr.md).

    python benchmarks/run_all.py [--seeds 3] [--jobs 2] [--device cpu] [--skip-timing]

The leaderboards' cells are kept in benchmarks/leaderboard*/cells, so a rerun only runs the
cells that are missing (delete those directories to measure from scratch; they are not
committed, so on a clone every cell runs). Each timing script
runs in its own process, one after another, so that none competes for the CPU.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from circuitx.files import atomic_open
from circuitx.leaderboard import parse_methods, plan_grid, run_leaderboard, tasks_for
from circuitx.leaderboard.cells import machine

HERE = Path(__file__).resolve().parent
TIMING = (
    ("Activation patching", ["activation_patching.py"]),
    ("Edge methods: EAP, EAP-IG, path patching, ACDC", ["edge_methods.py"]),
    ("CD-T", ["cdt.py", "--skip-planted"]),
    (
        "Discrete-SAE code overlap",
        ["sae.py", "--skip-planted", "--skip-examples", "--skip-settings"],
    ),
    ("Transcoders", ["transcoder.py", "--skip-planted"]),
    ("Many prompts: peak memory and time", ["many_prompts.py", "100000"]),
    ("Loading a model: peak and held memory", ["load_memory.py"]),
)


# (model, folder, title, ablation[, methods, backup rounds])
LEADERBOARDS = (
    ("planted", "leaderboard", "the planted models", "corrupted"),
    (
        "planted-hard",
        "leaderboard-hard",
        "the hard planted models (backup heads, louder distractors)",
        "corrupted",
        # the learned masks (hours of training on this CPU) and the variants left out
        "activation-patching,path-patching,cdt,sae,transcoder,acdc,eap,eap-ig,atp",
    ),
    (
        "planted-hard",
        "leaderboard-hard-backup",
        "the hard planted models, one backup round (--backup-rounds 1)",
        "corrupted",
        "activation-patching,cdt,eap-ig",
        1,
    ),
    (
        "planted",
        "leaderboard-acdc",
        "the planted models: ACDC with the authors' input tests (default) and without",
        "corrupted",
        "acdc,acdc[input-tests=off]",
    ),
    (
        "tracr",
        "leaderboard-tracr",
        "the tracr-compiled models (task tracr, metric l2)",
        "corrupted",
    ),
    (
        "trained",
        "leaderboard-trained",
        "the SIIT-trained models (task tracr with metric l2, ioi, greater-than and docstring)",
        "corrupted",
    ),
    (
        "trained",
        "leaderboard-trained-zero",
        "the SIIT-trained models, zero ablation (task tracr with metric l2, ioi, greater-than and docstring)",
        "zero",
    ),
)


def leaderboard_section(
    model: str,
    folder: str,
    title: str,
    ablation: str,
    seeds: int,
    jobs: int,
    device,
    methods: str = "all",
    backup_rounds: int = 0,
) -> str:
    out = HERE / folder
    grid = plan_grid(  # as the command below makes it
        model, tasks_for(model), parse_methods(methods), methods == "all", {}, {}, seeds,
        ablation=ablation, jobs=jobs, backup_rounds=backup_rounds, device=device,
    )  # fmt: skip
    for line in grid.notes:
        print(line, file=sys.stderr)
    cells = grid.cells
    start = time.perf_counter()
    board = run_leaderboard(cells, out, jobs=jobs, settings=grid.settings)
    took = time.perf_counter() - start
    command = (
        f"circuitx leaderboard --tasks all --methods {methods} --model {model} --seeds {seeds} "
        f"--jobs {jobs} --out benchmarks/{folder}"
        + (f" --ablation {ablation}" if ablation != "corrupted" else "")
        + (f" --backup-rounds {backup_rounds}" if backup_rounds else "")
        + (f" --device {device}" if device else "")
    )
    plots = " ".join(
        f"[{name}]({folder}/{Path(path).name})"
        for name, path in board.files.items()
        if path.endswith(".png")
    )
    resumed = (
        f"; {board.resumed} of {len(cells)} cells from an earlier run" if board.resumed else ""
    )
    return (
        f"## Leaderboard on {title}\n\n`{command}` ({took:.0f} s{resumed})\n\n"
        f"{(out / 'results.md').read_text()}\nPlots: {plots}\n"
    )


def timing_section(title: str, script: list[str], device: str | None) -> str:
    import torch

    script = [*script, "--device", device or ("cuda" if torch.cuda.is_available() else "cpu")]
    command = [sys.executable, str(HERE / script[0]), *script[1:]]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - start
    shown = f"python benchmarks/{' '.join(script)}"
    body = re.sub(r"^(#+) ", r"##\1 ", done.stdout.strip(), flags=re.MULTILINE) or "(no output)"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        body += f"\n\nFailed (exit {done.returncode}): {last}"
    return f"### {title}\n\n`{shown}` ({took:.0f} s)\n\n{body}\n"


def write(sections: list[str], header: str) -> None:
    with atomic_open(HERE / "RESULTS.md") as handle:
        handle.write(header + "\n\n".join(sections) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    header = (
        "# Benchmark results\n\n"
        f"Written by `python benchmarks/run_all.py`, started {date} on {machine()} "
        f"(device {args.device or 'auto'}). Every number below was measured: the timing runs "
        "by this run, the leaderboard cells by the run that finished them (a rerun reuses "
        "finished cells; the table's caption says when and where they ran).\n\n"
    )
    sections: list[str] = []
    for model, folder, title, ablation, *grid in LEADERBOARDS:
        print(f"running the leaderboard on {model} ({ablation})", file=sys.stderr, flush=True)
        sections.append(
            leaderboard_section(
                model, folder, title, ablation, args.seeds, args.jobs, args.device, *grid
            )
        )
        write(sections, header)
    if not args.skip_timing:
        sections.append("## Timing\n")
        for title, script in TIMING:
            print(f"running {script[0]}", file=sys.stderr, flush=True)
            sections.append(timing_section(title, script, args.device))
            write(sections, header)


if __name__ == "__main__":
    main()
