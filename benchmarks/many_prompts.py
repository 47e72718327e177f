"""Peak memory and wall time of `circuitx discover` for many prompts (issue 23).

Each run is a fresh process; its peak resident memory is the child's ``ru_maxrss``. The
command's JSON summary is kept beside the numbers (part count, timings, faithfulness).

    python benchmarks/many_prompts.py 100000 --threads 1 --out benchmarks/many_prompts.json

Results are appended to the ``--out`` JSON file (a list of runs) and printed as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def measure(n_prompts: int, method: str, extra: list[str]) -> dict:
    command = [
        sys.executable, "-m", "circuitx", "discover", "--task", "ioi", "--method", method,
        "--model", "planted", "--n-prompts", str(n_prompts), "--json", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    summary = json.loads(done.stdout)
    return {
        "command": " ".join(["circuitx", *command[3:]]),
        "n_prompts": n_prompts,
        "peak_rss_gb": round(peak / 1e9, 3),
        "wall_s": round(wall, 1),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n_prompts", type=int)
    parser.add_argument("--method", default="eap")
    parser.add_argument("--out", type=Path)
    args, extra = parser.parse_known_args()
    result = measure(args.n_prompts, args.method, extra)
    s = result["summary"]
    print("| command | peak memory | wall time | discovery | faithfulness |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {result['command']} | {result['peak_rss_gb']:.2f} GB | {result['wall_s']:.0f} s "
        f"| {s['discovery_s']:.0f} s | {s['faithfulness_s'] or 0:.0f} s |"
    )
    if args.out:
        runs = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps([*runs, result], indent=1) + "\n")


if __name__ == "__main__":
    main()
