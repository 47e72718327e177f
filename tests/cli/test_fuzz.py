"""A fuzz test of ``circuitx discover``: command lines drawn at random from every option's
valid and invalid values (bad paths, special files, a file used as a directory, a
non-UTF-8 name, non-finite numbers, typos). Each ends in exit 0 with strict JSON (and a
readable graph file where one was asked for), or in exit 2 with exactly one line on
stderr and no file left behind; never a traceback.

``CIRCUITX_FUZZ_CASES`` sets the number of cases (default 120; ``benchmarks/fuzz.md``
runs more), ``CIRCUITX_FUZZ_SEED`` the seed of the draw.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from conftest import SHORT_TRAINING, run, stderr_lines

from circuitx.graph_files import read_graph
from circuitx.methods import METHODS

CASES = int(os.environ.get("CIRCUITX_FUZZ_CASES", "120"))
SEED = int(os.environ.get("CIRCUITX_FUZZ_SEED", "0"))
# methods that run in about a second on the tiny model (sae trains an autoencoder and
# the transcoder needs transcoders: both still reach their own checks)
METHOD_NAMES = [*METHODS, "nope"]


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def draw(rng: random.Random, model: Path, work: Path) -> tuple[list[str], Path | None]:
    """One command line and the graph file it asks for (None: none). Each option is given
    with probability 0.3 (task, method, model and a few prompts always: a case is a check
    of what the command says, not of how long it runs, and ACDC over 50 prompts in parts
    of one took 90 s; the learned masks train for their tests' few steps), and then an
    invalid value with probability 0.15 (0.05 for those)."""
    args = ["discover"]
    choices = {  # flag: (valid values, invalid values)
        "--task": (["ioi", "ioi", "greater-than", "docstring", "colored-objects"], ["nope"]),
        "--method": (list(METHODS), ["nope", "ACDC"]),
        "--model": ([str(model)], ["plantd", "/no/such/model", str(work / "file"), "gpt2"]),
        "--n-prompts": (["1", "2", "3"], ["0", "-2", "x", "2.5"]),
        "--seed": (["0", "7", "-1"], ["x"]),
        "--threshold": (["0", "0.05", "1e400"], ["-1", "nan", "inf", "-inf", "x"]),
        "--top-k": (["1", "5", "999999"], ["0", "x"]),
        "--ablation": (["corrupted", "mean", "zero"], ["nope"]),
        "--reference": (["none", "auto", "ioi"], ["/no/such.graphml", "nope"]),
        "--metric": (["logit-diff", "kl"], ["nope"]),
        "--dtype": (["float32", "bfloat16"], ["float8"]),
        "--device": (["cpu"], ["cuda", "nope"]),
        "--threads": (["1", "2"], ["0"]),
        "--max-memory": (["2M", "64M", "1G"], ["0", "x", "nanG", "512"]),
        "--faithfulness-prompts": (["1", "2", "1000"], ["0", "x"]),
        "--tau": (["0.01"], ["nan", "-1"]),
        "--ig-steps": (["2"], ["0", "x"]),
    }
    own = {"--tau": "acdc", "--ig-steps": "eap-ig"}  # a method's own options: mostly with it
    for flag, (valid, invalid) in choices.items():
        required = flag in ("--task", "--method", "--model", "--n-prompts")
        if flag in own and own[flag] not in args and rng.random() < 0.9:
            continue
        if required or rng.random() < 0.3:
            wrong = rng.random() < (0.05 if required else 0.15)
            args += [flag, rng.choice(invalid if wrong else valid)]
    for method, options in SHORT_TRAINING.items():  # no draw: the other cases stay as they were
        if method in args:  # learned masks train for seconds, not the default minute
            args += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    if rng.random() < 0.2:
        args.append("--no-faithfulness")
    if rng.random() < 0.7:
        args.append("--json")
    out = None
    if rng.random() < 0.5:
        valid_places = [work / "out" / name for name in ("g.json", "g.graphml", "g.dot")]
        invalid_places = [
            work / "out" / "g.txt",  # no graph format
            work / "out" / os.fsdecode(b"\xff\xfe.json"),  # a name that is not UTF-8
            work / "file" / "g.json",  # a file used as a directory
            work / "out",  # a directory
            Path("/proc/g.json"),
            Path("/dev/full"),
            Path("/no/such/dir/g.json"),
        ]
        out = rng.choice(invalid_places if rng.random() < 0.4 else valid_places)
        args += ["--out", str(out)]
    return args, out


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    (work / "out").mkdir()
    (work / "file").write_text("not a directory")
    return work


@pytest.mark.parametrize("case", range(CASES))
def test_a_random_command_line_succeeds_or_fails_in_one_line(case, tiny_dir, workdir):
    rng = random.Random(SEED * 1_000_003 + case)
    args, out = draw(rng, tiny_dir, workdir)
    before = listing(workdir / "out")
    result = run(*args)
    shown = " ".join(args)
    assert "Traceback" not in result.output + result.stderr, shown
    if result.exit_code == 0:
        if "--json" in args:
            strict_json(result.stdout)
        if out is not None and out.suffix in (".json", ".graphml"):
            read_graph(out)
            out.unlink()
        elif out is not None:
            out.unlink()
        return
    assert result.exit_code == 2, (shown, result.exit_code, result.stderr)
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), (shown, result.stderr)
    assert listing(workdir / "out") == before, shown  # nothing half-written left behind
