"""Draw the gallery of docs/gallery: circuits found on built-in models, as `circuitx draw`
and `discover --draw` make them.

    python docs/gallery/make.py

Each picture is one `circuitx discover ... --draw` command, printed as it runs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PICTURES = {
    "planted-ioi-eap-ig.png": "--task ioi --model planted-ioi --method eap-ig --reference auto",
    "planted-greater-than-path-patching.png": (
        "--task greater-than --model planted --method path-patching --reference auto"
    ),
    "random-12x12-eap-top200.png": "--task ioi --model random-12x12 --method eap --top-k 200",
}


def main() -> None:
    for name, args in PICTURES.items():
        command = [sys.executable, "-m", "circuitx", "discover", *shlex.split(args)]
        command += ["--n-prompts", "20", "--faithfulness-prompts", "20", "--draw", str(HERE / name)]
        print(" ".join(shlex.quote(part) for part in command[2:]), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
