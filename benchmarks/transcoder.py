"""Transcoders: training cost, replacement quality, and what the attribution finds.

    python benchmarks/transcoder.py [--seeds 3] [--device cpu]
                                    [--skip-planted] [--skip-timing]

Part 1, every planted model: its transcoders as ``discover --method transcoder`` trains
them on first use (``BUILTIN_SETTINGS``, the ``tasks`` corpus), with the training time,
each layer's fraction of variance explained and L0 on held-out corpus sequences, and the
model's task metric with every MLP replaced; then the method on each of the model's tasks,
50 prompts, mean +- std over ``--seeds`` seeds, against the planted ground truth.

Part 2, the GPT-2-small-shaped random model (12 x 12, d_model 768, the real GPT-2
tokenizer): training time per layer per million tokens (one layer, ``--timing-features``
features, 20 steps of 2048 tokens of the task corpus, the activations gathered by model
passes included; the least-squares refit timed on its own row), and the attribution's
wall time on 50 IOI prompts with random transcoders of 24,576 features a layer (the size of the
pretrained GPT-2 small transcoders).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from edge_methods import gpt2_small_heading, measure, tiny_gpt2  # tests' model builder

from circuitx import transcoders as tc
from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.planted import PLANTED
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.methods.transcoder import attribute, replacement_hooks
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task


def planted(args: argparse.Namespace) -> None:
    # trained afresh in a cache of their own: the user's cached transcoders stay as they are
    with tempfile.TemporaryDirectory() as fresh:
        _planted(args, fresh)


def _planted(args: argparse.Namespace, fresh: str) -> None:
    s = tc.BUILTIN_SETTINGS
    print(
        f"\n## planted models: transcoders ({s.n_features} features, l1 {s.l1:g}, "
        f"{s.steps} steps of {s.batch_tokens} tokens, lr {s.lr:g}, tasks corpus)\n"
    )
    print(
        "| model | train (s) | FVE per layer | L0 per layer "
        "| task metric: original -> replaced (change) |"
    )
    print("| --- | ---: | --- | --- | --- |")
    found = []
    for name, spec in PLANTED.items():
        if args.models and name not in args.models:
            continue
        model = load_model(name, device=args.device)
        start = time.perf_counter()
        transcoders = tc.builtin_transcoders(model, fresh)
        seconds = time.perf_counter() - start
        corpus = tc.load_corpus(model, tc.BUILTIN_CORPUS, tc.BUILTIN_CONTEXT, s.seed)
        _, held_out = tc.held_out_split(corpus, s.seed)
        quality = tc.layer_quality(model, transcoders, held_out.tokens, held_out.real)
        replaced = tc.task_metric_with_replacement(model, transcoders, spec.task, 100, 1)
        fve = " / ".join(f"{q.fraction_of_variance_explained:.3f}" for q in quality.values())
        l0 = " / ".join(f"{q.l0:.0f}" for q in quality.values())
        print(
            f"| {name} | {seconds:.0f} | {fve} | {l0} | {replaced['metric']} "
            f"{replaced['original']:.3f} -> {replaced['replaced']:.3f} "
            f"({100 * replaced['relative_change']:.1f}%) |",
            flush=True,
        )
        found.append((name, model, spec))
    print(f"\n## planted models: transcoder attribution, 50 prompts, {args.seeds} seeds\n")
    print("| model | task | node AUC | edge AUC | node P | node R | faithfulness | time (s) |")
    print("|" + " --- |" * 2 + " ---: |" * 6)
    for name, model, spec in found:
        for task in spec.circuits():
            rows = []
            for seed in range(args.seeds):
                graph = discover(
                    model,
                    DiscoveryRequest(task, "transcoder", n_prompts=50, seed=seed, cache_dir=fresh),
                )
                rows.append(report(graph, ground_truth(name, task), "truth"))
            m = [r["metrics"] for r in rows]

            def mean_std(values: list[float]) -> str:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.3f} +- {spread:.3f}"

            print(
                f"| {name} | {task} | {mean_std([x['node_auc'] for x in m])} "
                f"| {mean_std([x['edge_auc'] for x in m])} "
                f"| {statistics.mean(x['node_precision'] or 0 for x in m):.2f} "
                f"| {statistics.mean(x['node_recall'] for x in m):.2f} "
                f"| {statistics.mean(r['faithfulness'] for r in rows):.2f} "
                f"| {statistics.mean(r['discovery_s'] for r in rows):.1f} |",
                flush=True,
            )


def timing(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_gpt2(Path(tmp) / "model", 12, 12, 768, seed=0)
        model = load_model(str(Path(tmp) / "model"), device=args.device)
        task = get_task("ioi")
        data = task.make_data(model, 50, seed=0)
        heading = gpt2_small_heading(list(data.clean.shape), args.device)
        print(heading.replace("each step in a fresh process", "all steps in one process"))
        corpus = tc.load_corpus(model, tc.BUILTIN_CORPUS, 128, 0)
        steps, batch = 20, 2048  # activations gathered for exactly the tokens trained on
        settings = tc.TrainingSettings(
            args.timing_features, steps=steps, batch_tokens=batch, buffer_tokens=steps * batch
        )
        tokens = settings.steps * settings.batch_tokens
        rows = torch.arange(len(corpus.tokens))[corpus.real.sum(1).cumsum(0) <= tokens]
        gathered: dict = {}

        def gather() -> None:
            for chunk in rows.split(64):
                pieces = tc.mlp_activations(model, corpus.tokens[chunk], [6], corpus.real[chunk])
                gathered.setdefault("x", []).append(pieces[6][0])
                gathered.setdefault("y", []).append(pieces[6][1])

        tc.mlp_activations(model, corpus.tokens[rows[:64]], [6], corpus.real[rows[:64]])  # warm-up
        settings.refit = False
        train_s, train_mib = measure(
            lambda: gathered.update(t=tc.train_transcoders(model, [6], corpus, settings)[6]),
            model.device,
        )
        gather()  # the activations the refit is timed on
        x, y = torch.cat(gathered["x"]), torch.cat(gathered["y"])
        refit_s, refit_mib = measure(lambda: tc.refit_decoder(gathered["t"], x, y), model.device)
        print("| step | time (s) | s per million tokens | peak memory (MiB) |")
        print("| --- | ---: | ---: | ---: |")
        print(
            f"| train one layer: {settings.n_features} features, {settings.steps} steps of "
            f"{settings.batch_tokens} tokens, gathering the activations included "
            f"| {train_s:.1f} | {train_s * 1e6 / tokens:.0f} | {train_mib:.0f} |"
        )
        print(
            f"| least-squares decoder refit on {len(x)} tokens, one layer | {refit_s:.1f} "
            f"| - | {refit_mib:.0f} |"
        )
        generator = torch.Generator().manual_seed(0)
        n_features, d = 24576, model.d_model
        random = {
            layer: tc.Transcoder(
                W_enc=torch.randn(d, n_features, generator=generator) / d**0.5,
                b_enc=-0.5 * torch.ones(n_features),
                W_dec=torch.nn.functional.normalize(
                    torch.randn(n_features, d, generator=generator), dim=1
                ),
                b_dec=torch.zeros(d),
                b_dec_out=torch.zeros(d),
            )
            for layer in range(model.n_layers)
        }
        tc.save_transcoders(random, Path(tmp) / "transcoders", "random")
        engine = PatchingEngine(model, task, data, kept=replacement_hooks(model))
        seconds, mib = measure(
            lambda: engine.model.run(data.clean, positions=data.positions["END"]), model.device
        )
        print(f"| one forward pass of the 50 prompts (unit) | {seconds:.2f} | - | {mib:.0f} |")

        transcoders = {
            k: v.to(model.device, model.dtype)
            for k, v in tc.load_transcoders(str(Path(tmp) / "transcoders")).items()
        }
        for n_top in (0, 10):
            seconds, mib = measure(
                lambda: attribute(engine, transcoders, n_top).edge_blocks(), model.device
            )
            label = "head/MLP graph" if n_top == 0 else f"feature graph, {n_top} features a layer"
            print(
                f"| attribution, 24576 features a layer, {label} | {seconds:.2f} | - | {mib:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", help="planted models to run (default: all)")
    parser.add_argument("--timing-features", type=int, default=6144)
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    if not args.skip_planted:
        planted(args)
    if not args.skip_timing:
        timing(args)


if __name__ == "__main__":
    main()
