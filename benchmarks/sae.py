"""Discrete-SAE code overlap: wall time, and what it finds on the planted models.

    python benchmarks/sae.py [--n-prompts 250] [--seeds 5] [--device cpu]
                             [--skip-timing] [--skip-planted] [--skip-examples]

Part 1: the GPT-2-small-shaped random model (12 x 12, d_model 768, the real GPT-2
tokenizer) on IOI with ``--n-prompts`` positive and as many negative prompts (the authors
use 250 + 250). Steps as in benchmarks/cdt.py, each in a fresh process: one forward pass
(the unit), the engine's cached clean and corrupted runs, and the method (averaging the
writes, training the autoencoder, codes and scores).

Part 2: ``discover --method sae`` with its defaults on every planted model, 50 prompts,
mean +- std over ``--seeds`` seeds; beside it the authors' configuration (raw inputs,
distinct-code count, their sparsity penalty: 0.05 on docstring, else 0.02, the heads'
outputs alone).

Part 3: node AUC on the clean planted models with 5, 10, 25 and 50 training examples (codes
capped at the number of training vectors), one autoencoder.

Part 4: node AUC on the clean planted models, mean and lowest over ``--seeds`` seeds, for
settings of ``--sae-positions`` (mean, named), ``--n-examples`` (10, 5) and
``--sae-restarts`` (1, 3).

Part 5: the autoencoders' fit (variance explained on the training vectors and on the
vectors held out, L0, dead units, inputs with no active unit, codes used) and node AUC,
with our defaults, the defaults before issue 30 and the authors' configuration and
autoencoder class, on the clean planted models and random-12x12 (issue 30).

Part 6: the codes of planted IOI's components on positive and negative prompts.

Part 7: what a component's vectors hold apart from the autoencoder: each component's
cross-validated accuracy at telling positive from negative prompts by its own vectors
(nearest class mean; 5 nearest neighbours) taken as a node score; how far its mean
vector moves between a positive prompt and its paired negative, over its spread; the total
variation between its positive and negative code histograms less chance; the share of
pairs whose code changes, less chance (pairs shuffled); beside our above-chance share
(clean planted models, seed 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy
import torch
from cdt import run_step  # one timed step in a fresh process, as for CD-T
from conftest import tiny_gpt2  # the tests' model builder (edge_methods puts tests/ on the path)
from edge_methods import gpt2_small_heading, in_fresh_process

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.planted import PLANTED
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.engine import Engine
from circuitx.methods import MethodRun, get_method, method_options
from circuitx.methods.sae import DEFAULT_CODES, _each_vector_block, _overlap, sae_positions
from circuitx.scoring import roc_auc
from circuitx.tasks import get_task

STEPS = ("forward", "engine", "sae")
AUTHORS_L1 = {"docstring": 0.05}  # experiments/main_results.py; 0.02 otherwise
AUTHORS = {  # the rest of their configuration there, and their autoencoder class's decoder
    "sae_inputs": "raw",
    "node_score": "unique-codes",
    "n_examples": 10,
    "sae_restarts": 1,
    "sae_decoder_norm": "output",
    "sae_components": "heads",  # their data stacks the heads' outputs alone
}
PREVIOUS = {"sae_l1": 0.05, "node_score": "positive-share"}  # the defaults before issue 30
EXAMPLES = (5, 10, 25, 50)
SETTINGS = (  # the authors' 10 examples and one autoencoder, then the options
    {"sae_positions": "mean", "n_examples": 10, "sae_restarts": 1},
    {"sae_positions": "mean", "n_examples": 10, "sae_restarts": 3},
    {"sae_positions": "named", "n_examples": 10, "sae_restarts": 1},
    {"sae_positions": "named", "n_examples": 10, "sae_restarts": 3},
    {"sae_positions": "mean", "n_examples": 5, "sae_restarts": 1},
    {"sae_positions": "mean", "n_examples": 5, "sae_restarts": 3},  # the defaults
)


def timing(args: argparse.Namespace) -> None:
    options = ["--n-prompts", str(args.n_prompts), "--device", args.device]
    with tempfile.TemporaryDirectory() as tmp:
        tiny_gpt2(Path(tmp), 12, 12, 768, seed=0)
        results = {step: in_fresh_process(__file__, step, tmp, options) for step in STEPS}
    print(gpt2_small_heading(results["forward"]["shape"], args.device))
    defaults = method_options(get_method("sae"))
    labels = {
        "forward": "one forward pass of the positives (unit)",
        "engine": "engine: cache positive + negative runs",
        "sae": f"sae: train ({defaults['sae_steps']} steps, "
        f"{defaults['n_codes'] or f'at most {DEFAULT_CODES}'} codes, "
        f"{defaults['n_examples']} examples), codes, scores",
    }
    unit = results["forward"]
    print("| step | time (s) | x forward | peak memory (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for step in STEPS:
        seconds, mib = results[step]["seconds"], results[step]["mib"]
        memory = "-" if mib is None else f"{mib:.0f}"
        print(f"| {labels[step]} | {seconds:.2f} | {seconds / unit['seconds']:.1f} | {memory} |")


def runs(
    model, name: str, task: str, seeds: int, faithfulness: bool = True, **options
) -> list[dict]:
    """``discover --method sae`` under seeds 0..seeds-1, scored against the ground truth."""
    truth = ground_truth(name, task)
    summaries = []
    for seed in range(seeds):
        request = DiscoveryRequest(
            task, "sae", n_prompts=50, seed=seed, options=options, faithfulness=faithfulness
        )
        graph = discover(model, request)
        summaries.append(report(graph, truth, "truth"))
    return summaries


def chosen(args: argparse.Namespace) -> list:
    names = args.models.split(",") if args.models else list(PLANTED)
    return [(name, PLANTED[name]) for name in names]


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.pstdev(values):.3f}"


def planted(args: argparse.Namespace) -> None:
    print(f"\n## planted models, 50 prompts, {args.seeds} seeds, against the ground truth\n")
    print(
        "| model | task | node AUC | edge AUC | node P | node R | faithfulness "
        "| authors' config: node AUC | time (s) |"
    )
    print("|" + " --- |" * 2 + " ---: |" * 7)
    for name, spec in chosen(args):
        model = load_model(name, device=args.device)
        for task in spec.circuits():
            ours = runs(model, name, task, args.seeds)
            authors = runs(
                model, name, task, args.seeds, **AUTHORS, sae_l1=AUTHORS_L1.get(task, 0.02)
            )
            column = lambda key, rows=ours: [r["metrics"][key] for r in rows]
            mean = lambda values: (  # precision is undefined where no node is kept
                "-" if None in values else f"{statistics.mean(values):.2f}"
            )
            print(
                f"| {name} | {task} | {spread(column('node_auc'))} "
                f"| {spread(column('edge_auc'))} | {mean(column('node_precision'))} "
                f"| {mean(column('node_recall'))} | {mean([r['faithfulness'] for r in ours])} "
                f"| {spread(column('node_auc', authors))} "
                f"| {statistics.mean(r['discovery_s'] for r in ours):.1f} |",
                flush=True,
            )


def examples(args: argparse.Namespace) -> None:
    print(f"\n## node AUC by training examples, clean planted models, {args.seeds} seeds\n")
    print("| model | " + " | ".join(f"{n} examples" for n in EXAMPLES) + " |")
    print("| --- |" + " ---: |" * len(EXAMPLES))
    for name, spec in chosen(args):
        if spec.hard:
            continue
        model = load_model(name, device=args.device)
        components = model.n_layers * (model.n_heads + 1)
        cells = []
        for n_examples in EXAMPLES:
            n_codes = min(200, n_examples * components)
            rows = runs(
                model,
                name,
                spec.task,
                args.seeds,
                False,
                n_examples=n_examples,
                n_codes=n_codes,
                sae_restarts=1,
            )
            codes = "" if n_codes == 200 else f" ({n_codes} codes)"
            cells.append(spread([r["metrics"]["node_auc"] for r in rows]) + codes)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def settings(args: argparse.Namespace) -> None:
    print(f"\n## node AUC by positions and restarts, clean planted models, {args.seeds} seeds\n")
    labels = [
        f"{s['sae_positions']}, {s['n_examples']} examples, {s['sae_restarts']} "
        "autoencoder(s): mean (lowest)"
        for s in SETTINGS
    ]
    print("| model | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(SETTINGS))
    for name, spec in chosen(args):
        if spec.hard:
            continue
        model = load_model(name, device=args.device)
        cells = []
        for setting in SETTINGS:
            rows = runs(model, name, spec.task, args.seeds, False, **setting)
            aucs = [r["metrics"]["node_auc"] for r in rows]
            cells.append(f"{statistics.mean(aucs):.3f} ({min(aucs):.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


HEALTH = ("sae_fraction_of_variance_explained", "sae_held_out_fraction_of_variance_explained",
          "sae_l0", "sae_dead_fraction", "sae_no_code_fraction")  # fmt: skip


def health(args: argparse.Namespace) -> None:
    """Part 5 (issue 30): how well each autoencoder reconstructs what it codes, with our
    defaults, the defaults before issue 30, and the authors' configuration and class, on
    the clean planted models and random-12x12."""
    print(f"\n## the autoencoders' fit, 50 prompts, {args.seeds} seeds (means)\n")
    print("| model | task | config | FVE | held-out FVE | L0 | dead units | inputs with no code "
          "| codes used | node AUC |")  # fmt: skip
    print("| --- | --- | --- |" + " ---: |" * 7)
    models = [(name, spec.task) for name, spec in chosen(args) if not spec.hard]
    for name, task in [*models, ("random-12x12", "ioi")]:
        model = load_model(name, device=args.device)
        truth = ground_truth(name, task) if name != "random-12x12" else None
        for label, options in (
            ("ours", {}),
            ("before issue 30", PREVIOUS),
            ("authors'", {**AUTHORS, "sae_l1": AUTHORS_L1.get(task, 0.02)}),
        ):
            graphs = [
                discover(
                    model,
                    DiscoveryRequest(
                        task, "sae", n_prompts=50, seed=seed, options=options, faithfulness=False
                    ),
                )
                for seed in range(args.seeds)
            ]
            means = {
                key: statistics.mean(g.graph[key] for g in graphs)
                for key in (*HEALTH, "sae_codes_used")
            }
            aucs = [report(g, truth, "truth")["metrics"]["node_auc"] for g in graphs]
            auc = "-" if truth is None else f"{statistics.mean(aucs):.3f}"
            values = " | ".join(f"{means[key]:.3f}" for key in HEALTH)
            used = means["sae_codes_used"]
            print(f"| {name} | {task} | {label} | {values} | {used:.0f} | {auc} |", flush=True)


def histograms(args: argparse.Namespace) -> None:
    """Part 6 (issue 30): the codes of planted IOI's circuit heads and of distractors on
    positive and negative prompts, with our defaults (the first autoencoder, seed 0)."""
    model = load_model("planted-ioi", device=args.device)
    task = get_task("ioi", get_task("ioi").negative_corruption)
    method = get_method("sae")
    run = MethodRun(seed=0, options=method_options(method, {}), n_prompts=50)
    engine = Engine(model, task, task.make_data(model, 50, 0), task.default_metric)
    coded = method.code_prompts(engine, run)
    codes, n = coded.codes[0], engine.n_prompts
    truth = ground_truth("planted-ioi", "ioi")
    senders = list(engine.layout.senders)[1:]
    print("\n## codes on planted IOI, our defaults, seed 0, first autoencoder\n")
    print("Each code with its count on the 50 positive / 50 negative prompts; **bold**: a "
          "code no negative shows; `-`: no active unit.\n")  # fmt: skip
    print("| component | in circuit | codes: positives / negatives |")
    print("| --- | --- | --- |")
    for component, name in enumerate(senders):
        column = codes[:, component]
        positive, negative = column[:n].tolist(), column[n:].tolist()
        shown = []
        for code in sorted(set(positive) | set(negative), key=lambda c: -positive.count(c)):
            label = "-" if code == coded.n_codes else str(code)
            text = f"{label}: {positive.count(code)}/{negative.count(code)}"
            shown.append(f"**{text}**" if code not in negative else text)
        inside = "yes" if truth.nodes[name].get("in_circuit") else ""
        print(f"| {name} | {inside} | {', '.join(shown)} |")


def classifier_accuracy(vectors: torch.Tensor, labels: torch.Tensor, rule: str) -> float:
    """5-fold cross-validated accuracy of ``rule`` (nearest class mean, or the majority
    of the 5 nearest training vectors) at telling ``labels`` apart from ``vectors`` [n, d],
    averaged over 5 draws of the folds."""
    hits, draws = 0, [torch.Generator().manual_seed(seed) for seed in range(5)]
    folds = [fold for g in draws for fold in torch.randperm(len(vectors), generator=g).chunk(5)]
    for fold in folds:
        train = torch.ones(len(vectors), dtype=torch.bool)
        train[fold] = False
        x, y = vectors[train], labels[train]
        if rule == "mean":
            positive, negative = x[y].mean(0), x[~y].mean(0)
            direction = positive - negative
            guess = vectors[fold] @ direction > (positive + negative) @ direction / 2
        else:
            nearest = torch.cdist(vectors[fold], x).topk(5, largest=False).indices
            guess = y[nearest].double().mean(1) > 0.5
        hits += int((guess == labels[fold]).sum())
    return hits / (len(draws) * len(vectors))


def code_shift(codes: torch.Tensor, n: int, space: int) -> torch.Tensor:
    """Total variation between the positive and negative code histograms of each
    column of ``codes`` [2 n, G]. Returns [G]."""
    counts = [
        torch.stack([torch.bincount(column, minlength=space) for column in half.T]).double()
        for half in (codes[:n], codes[n:])
    ]
    return 0.5 * (counts[0] - counts[1]).abs().sum(1) / n


def paired_distance(vectors: torch.Tensor, n: int) -> torch.Tensor:
    """Each component's mean distance between a positive prompt's vector and its paired
    negative's, over its vectors' mean distance from their mean: [2 n, C, d] -> [C]."""
    distance = (vectors[:n] - vectors[n:]).norm(dim=-1).mean(0)
    return distance / ((vectors - vectors.mean(0)).norm(dim=-1).mean(0) + 1e-12)


def code_change(codes: torch.Tensor, n: int, pairing: torch.Tensor) -> torch.Tensor:
    """The share of positive prompts whose code differs from their ``pairing``'s negative
    (its own twin: ``arange(n)``), per column of ``codes`` [2 n, G]. Returns [G]."""
    return (codes[:n] != codes[n:][pairing]).double().mean(0)


def separability(args: argparse.Namespace) -> None:
    """Part 7 (issue 30): node AUC of scores read from each component's vectors without
    the autoencoder, and of a code-histogram shift, beside our share (seed 0)."""
    print("\n## what the vectors hold: node AUC, 50 prompts, seed 0\n")
    print("| model | task | nearest mean, mean vector | 5-NN, mean vector | nearest mean, "
          "named positions | 5-NN, named positions | paired distance / spread | code shift "
          "less chance | paired code change less chance | ours |")  # fmt: skip
    print("| --- | --- |" + " ---: |" * 8)
    method = get_method("sae")
    for name, spec in chosen(args):
        if spec.hard:
            continue
        model = load_model(name, device=args.device)
        task = get_task(spec.task, get_task(spec.task).negative_corruption)
        engine = Engine(model, task, task.make_data(model, 50, 0), task.default_metric)
        senders = list(engine.layout.senders)[1:]
        truth = ground_truth(name, spec.task)
        inside = numpy.array([bool(truth.nodes[s].get("in_circuit")) for s in senders])
        n = engine.n_prompts
        labels = torch.arange(2 * n) < n
        cells = []
        read = {}  # mode -> every prompt's vectors
        for mode in ("mean", "named"):
            positions, count = sae_positions(engine, mode)
            blocks = sorted(_each_vector_block(engine, positions), key=lambda b: int(b[1][0]))
            vectors = read[mode] = (
                torch.cat([v for v, _ in blocks]).double().cpu()
            )  # [2 n, units, d]
            for rule in ("mean", "knn"):
                accuracy = [classifier_accuracy(vectors[:, u], labels, rule)
                            for u in range(vectors.shape[1])]  # fmt: skip
                best = torch.tensor(accuracy).view(len(senders), count).max(1).values
                cells.append(roc_auc(best.numpy(), inside))
        # the mean mode's units are the components: [2 n, C, d]
        cells.append(roc_auc(paired_distance(read["mean"], n).numpy(), inside))
        run = MethodRun(seed=0, options=method_options(method, {}), n_prompts=n)
        coded = method.code_prompts(engine, run)
        space = coded.n_codes + 1
        ours = [_overlap(coded, k, "above-chance").node.cpu() for k in range(len(coded.fits))]
        shifts, changes, generator = [], [], torch.Generator().manual_seed(0)
        pairing_generator = torch.Generator().manual_seed(0)
        for k in range(len(coded.fits)):
            codes = coded.codes[k].cpu()
            halvings = [torch.randperm(2 * n, generator=generator) for _ in range(20)]
            chance = sum(code_shift(codes[order], n, space) for order in halvings) / 20
            shifts.append((code_shift(codes, n, space) - chance).clamp_min(0))
            pairings = [torch.randperm(n, generator=pairing_generator) for _ in range(20)]
            chance = sum(code_change(codes, n, order) for order in pairings) / 20
            changes.append(code_change(codes, n, torch.arange(n)) - chance)
        for scores in (shifts, changes, ours):
            cells.append(roc_auc(torch.stack(scores).mean(0).numpy(), inside))
        print(f"| {name} | {spec.task} | " + " | ".join(f"{c:.3f}" for c in cells) + " |",
              flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=250)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--skip-examples", action="store_true")
    parser.add_argument("--skip-settings", action="store_true")
    parser.add_argument("--skip-health", action="store_true")
    parser.add_argument("--skip-histograms", action="store_true")
    parser.add_argument("--skip-separability", action="store_true")
    parser.add_argument("--models", help="comma-separated planted models (default: all)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.model_dir, args)))
        return
    if not args.skip_timing:
        timing(args)
    if not args.skip_planted:
        planted(args)
    if not args.skip_examples:
        examples(args)
    if not args.skip_settings:
        settings(args)
    if not args.skip_health:
        health(args)
    if not args.skip_histograms:
        histograms(args)
    if not args.skip_separability:
        separability(args)


if __name__ == "__main__":
    main()
