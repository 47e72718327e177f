"""``circuitx tasks``, ``circuitx methods`` and ``circuitx models``: what there is."""

from __future__ import annotations

from typing import Any

import click
import networkx as nx

from circuitx.builtin import BUILTIN_MODELS, FAMILIES, BuiltinModel, built_model_dir
from circuitx.builtin.ground_truth import read_ground_truths
from circuitx.cli.common import list_json_option, print_rows
from circuitx.methods import METHODS
from circuitx.models import HUB_ALIASES
from circuitx.progress import counted
from circuitx.tasks import TASKS


def _flag_value(value: Any) -> str:
    return "(none)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


NOT_BUILT = "known once built"  # the circuit column of a model whose ground truth needs a build


@click.command()
@list_json_option
def tasks(as_json) -> None:
    """List the tasks."""
    rows = [
        {
            "name": t.name,
            "title": t.title,
            "default_model": t.default_model,
            "paper_model": t.paper_model,
            "default_metric": t.default_metric,
            "metrics": list(t.metrics),
            "corruptions": list(t.corruptions),
            "positions": list(t.circuit_positions),  # --positions named's, besides other
            "references": [f"{t.name}:{v}" if v else t.name for v in t.reference_variants],
            "relational_reference": t.reference_task,
        }
        for t in TASKS.values()
    ]
    columns = ("name", "default_model", "default_metric", "positions", "references")
    print_rows(rows, as_json, "tasks", columns)


@click.command()
@list_json_option
def methods(as_json) -> None:
    """List the discovery methods and their options."""
    rows = [
        {
            "name": m.name,
            "title": m.title,
            "granularity": m.granularity,
            "scores_edges": m.scores_edges,  # edges scored of their own, whatever it ranks
            # null where the default circuit is a size (edge pruning's target sparsity)
            "default_threshold": m.default_threshold if m.default_threshold_selects() else None,
            "default_circuit": m.default_circuit(),
            "positions": m.scores_positions,  # scores circuits over token positions
            "options": {option.name: option.default for option in m.options},
            "option_declarations": [option.describe() for option in m.options],
        }
        for m in METHODS.values()
    ]
    if not as_json:  # the table speaks in flags
        for row, method in zip(rows, METHODS.values()):
            row["options"] = [f"{o.flag} {_flag_value(o.default)}" for o in method.options]
            row["positions"] = "yes" if row["positions"] else "no"
            row["edge scores"] = "yes" if row["scores_edges"] else "no"
    columns = ("name", "granularity", "edge scores", "positions", "default_circuit", "options")
    columns += ("title",)
    print_rows(rows, as_json, "methods", columns)


@click.command()
@list_json_option
def models(as_json) -> None:
    """List built-in models (with each model's task and ground-truth circuit), the families
    that stand for a task's model, and hub aliases. A tracr model's circuit is read from its
    compiled weights, so it shows once the model is built (its first use)."""
    rows = []
    for m in BUILTIN_MODELS.values():
        circuits = _known_circuits(m)
        if m.task in circuits:
            circuit = _circuit_size(circuits[m.task])
        else:  # a tracr model's ground truth is read from its compiled weights
            circuit = NOT_BUILT if m.has_ground_truth else None
        rows.append(
            {
                "name": m.name,
                "source": "built-in (no download)",
                "task": m.task,
                "circuit": circuit,
                "description": m.description + _scores_note(m.scores),
                "circuits": {task: _circuit_facts(graph) for task, graph in circuits.items()},
                "trained_scores": m.scores,  # every_pair 1: on every pair, else held out
            }
        )
    rows += [
        {
            "name": family.name,
            "source": "family of built-in models",
            "task": None,
            "circuit": None,
            "description": f"{family.description}: "
            + ", ".join(_members(family, task) for task in family.members),
            "circuits": {},
            "held_out": None,
        }
        for family in FAMILIES.values()
    ]
    rows += [
        {
            "name": alias,
            "source": "Hugging Face hub",
            "task": None,
            "circuit": None,
            "description": hub_id,
            "circuits": {},
            "held_out": None,
        }
        for alias, hub_id in HUB_ALIASES.items()
    ]
    print_rows(rows, as_json, "models", ("name", "source", "task", "circuit", "description"))


def _known_circuits(model: BuiltinModel) -> dict[str, nx.MultiDiGraph]:
    """A built-in model's ground truths by task, where known without building anything:
    shipped with its definition, or read from its directory if it is already built."""
    if model.circuits:
        return model.circuits()
    built = built_model_dir(model.name) if model.has_ground_truth else None
    return read_ground_truths(built) if built else {}


def _members(family: Any, task: str) -> str:
    """What ``--model FAMILY`` runs on ``task``: one model, or (where the family has more)
    the one discover takes and what the leaderboard adds, or a choice to name."""
    first, *others = family.models_for(task)
    if not others:
        return f"{task} -> {first}"
    if family.first_is_default:
        return f"{task} -> {first} (the leaderboard adds {', '.join(others)})"
    return f"{task} -> one of {', '.join([first, *others])} (named; the leaderboard runs all)"


def _scores_note(scores: dict[str, float] | None) -> str:
    """A trained model's scores (held-out, or on every pair of a small table), measured
    when it was trained."""
    if not scores:
        return ""
    return (
        f" ({'every pair' if scores.get('every_pair') else 'held out'}: "
        f"accuracy {scores['accuracy']:.3f}, IIA {scores['iia']:.3f}, "
        f"strict-IIA {scores['strict_iia']:.3f} per node, "
        f"{scores['strict_iia_joint']:.3f} all at once)"
    )


def _circuit_facts(graph: nx.MultiDiGraph) -> dict[str, Any]:
    nodes = [
        n for n, d in graph.nodes(data=True) if d["in_circuit"] and d["kind"] in ("head", "mlp")
    ]
    return {
        "heads": [n for n in nodes if graph.nodes[n]["kind"] == "head"],
        "mlps": [n for n in nodes if graph.nodes[n]["kind"] == "mlp"],
        "n_edges": sum(bool(d["in_circuit"]) for *_, d in graph.edges(data=True)),
    }


def _circuit_size(graph: nx.MultiDiGraph) -> str:
    facts = _circuit_facts(graph)
    counts = (len(facts["heads"]), "head"), (len(facts["mlps"]), "MLP"), (facts["n_edges"], "edge")
    return ", ".join(counted(count, word) for count, word in counts)
