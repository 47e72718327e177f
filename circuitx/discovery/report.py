"""The JSON summary of a discovery, scored against its reference."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from circuitx.errors import listed
from circuitx.files import size_text
from circuitx.graph import (
    collapse_positions,
    component_graph,
    component_nodes,
    edges_by_name,
    layout_of,
    parallel_view,
    position_aliases,
    position_groups,
)
from circuitx.layout import OTHER, Layout
from circuitx.methods import METHODS, Method
from circuitx.names import split_position
from circuitx.progress import counted
from circuitx.reference import RolePositions, position_reference
from circuitx.scoring import check_same_model, empty_metrics, one_class_levels, overlap, score_graph
from circuitx.tasks import TASKS


def matching_reference(
    graph: nx.MultiDiGraph, reference: nx.MultiDiGraph | None
) -> nx.MultiDiGraph | None:
    """``reference`` in ``graph``'s universe: a component-level reference of a circuit
    over token positions goes to those positions by its task's roles
    (:func:`circuitx.reference.position_reference`)."""
    if reference is None:
        return None
    matched = reference
    if position_groups(graph) is not None and position_groups(reference) is None:
        components = {split_position(node)[0] for node in component_nodes(graph)}
        if components != set(component_nodes(reference)):  # say so before placing it
            check_same_model(collapse_positions(graph), reference)
        matched = position_reference(reference, layout_of(graph), _roles(graph, reference))
    check_same_model(graph, matched)
    return matched


def _roles(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph) -> RolePositions:
    """The positions of the roles a component-level reference goes to positions by: the
    graph's task's, else those of the task the reference was made for (a planted model's
    circuit, scoring a task file's prompts)."""
    task = TASKS.get(str(graph.graph.get("task"))) or TASKS.get(str(reference.graph.get("task")))
    return task.role_positions if task is not None else {}


def scoring_notes(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph) -> list[str]:
    """What a reader of ``graph``'s scores against ``reference`` would otherwise not see:
    a level whose ROC AUC is missing because some (not all) of its items have no score or
    the reference puts all its items on one side, and a component-level reference
    without roles placed on a circuit over positions."""
    notes = []
    component = component_graph(graph)
    matched = matching_reference(graph, reference)
    for level, every in one_class_levels(component, matched).items():
        notes.append(
            f"note: the reference puts {'every' if every else 'no'} {level} of the graph in "
            f"its circuit, so there is no {level} ROC AUC (it needs {level}s on both sides)"
        )
    levels = {"node": [component.nodes[n] for n in component_nodes(component)]}
    levels["edge"] = [data for *_, data in component.edges(data=True)]
    for level, rows in levels.items():
        unscored = sum(row.get("score") is None for row in rows)
        if 0 < unscored < len(rows):
            notes.append(
                f"note: {unscored} of the graph's {len(rows)} {level}s "
                f"{'has' if unscored == 1 else 'have'} no score, so it has no {level} ROC AUC"
            )
    published = str(reference.graph.get("reference") or "").partition(":")[0] in TASKS
    # a published reference is as published: ACDC's greater-than one keeps such edges,
    # through MLPs 4-7
    loose = {"graph": loose_edges(graph), "reference": [] if published else loose_edges(reference)}
    notes += [_loose_note(which, keys) for which, keys in loose.items() if keys]
    if (
        matched is not None
        and component.graph.get("parallel")
        and not matched.graph.get("parallel")
    ):
        kept = edges_by_name(parallel_view(matched)).keys()
        lost = [k for k, d in edges_by_name(matched).items() if d["in_circuit"] and k not in kept]
        if lost:  # a sequential model's circuit scored in a parallel model's universe
            which = (
                f"{len(lost)} of the reference's circuit edges ({listed(lost, 3)}) have"
                if len(lost) > 1
                else f"the reference's circuit edge {lost[0]} has"
            )
            notes.append(
                "note: the graph's model runs attention and MLP in parallel (GPT-NeoX, GPT-J): "
                f"{which} no place in it (a layer's heads into its MLP) and "
                f"{'are' if len(lost) > 1 else 'is'} left out of the scores"
            )
        else:  # a trial's: nothing said when nothing of the circuit was lost
            notes.append(
                "note: the graph's model runs attention and MLP in parallel (GPT-NeoX, GPT-J) "
                "and the reference's does not: the reference is scored without its edges from "
                "a layer's heads into its MLP, none of them in its circuit"
            )
    models = [str(g.graph.get("model") or "") for g in (graph, reference)]
    if reference.graph.get("method") and all(models) and models[0] != models[1]:
        notes.append(  # a circuit found on another model of the same shape
            f"note: the graph is from {models[0]} and the reference is a circuit found on "
            f"{models[1]}, a model of the same shape: its nodes count as {models[0]}'s"
        )
    placing = {  # what :func:`position_reference` could not place: the verb, one and many
        "unplaced_heads": (
            ("has", "have"),
            "no role the task places at one of the graph's positions, so each counts at "
            "every position",
        ),
        "unplaced_reads": (
            ("reads", "read"),
            "a key position that is not at one of the graph's positions in every prompt, "
            "so each one's k and v edges count from every key position",
        ),
    }
    for key, (verbs, what) in placing.items():
        named = str(matched.graph.get(key) or "") if matched is not None else ""
        if named:
            heads = named.split(",")
            notes.append(
                f"note: {len(heads)} of the reference's circuit heads ({listed(heads, 3)}) "
                f"{verbs[len(heads) > 1]} {what}; --collapse-positions scores the circuit's "
                "components instead"
            )
    return notes


def loose_edges(graph: nx.MultiDiGraph) -> list[str]:
    """The edges ``graph`` keeps between nodes it does not keep both of (a hand-edited
    file's, or one of EAP-IG's written without its prune)."""
    nodes = graph.nodes
    return [
        key
        for sender, receiver, key, kept in graph.edges(keys=True, data="in_circuit")
        if kept and not (nodes[sender].get("in_circuit") and nodes[receiver].get("in_circuit"))
    ]


def _loose_note(which: str, keys: list[str]) -> str:
    return (
        f"note: the {which} keeps {counted(len(keys), 'edge')} between "
        f"nodes it does not keep ({listed(keys, 3)}): they count as its edges, and their "
        "ends not as its nodes"
    )


def overlap_notes(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> list[str]:
    """What a reader of two circuits' overlap would otherwise not see: one over token
    positions is compared as its components; a circuit's edges between nodes it does not
    keep; circuits of two tasks or two models, one with parallel blocks."""
    loose = {f"graph {name}": loose_edges(g) for name, g in (("A", a), ("B", b))}
    notes = [_loose_note(which, keys) for which, keys in loose.items() if keys]
    groups = [position_groups(g) for g in (a, b)]
    if (groups[0] is None) != (groups[1] is None):
        notes.append("note: one circuit is over token positions: it is compared as its components")
    elif groups[0] != groups[1]:
        notes.append(
            "note: the circuits are over different token positions: they are compared as "
            "their components"
        )
    tasks = [g.graph.get("task") for g in (a, b)]
    if None not in tasks and tasks[0] != tasks[1]:  # a trial compared two tasks unawares
        notes.append(f"note: the circuits are of two tasks ({tasks[0]}, {tasks[1]})")
    digests = [g.graph.get("task_file_sha256") for g in (a, b)]
    if tasks[0] == tasks[1] and None not in digests and digests[0] != digests[1]:
        notes.append(  # a trial's t.csv and t.jsonl: one task name, the file's stem
            f"note: the circuits are of two task files named {tasks[0]} whose bytes differ "
            f"({a.graph.get('task_file')}, {b.graph.get('task_file')})"
        )
    models = [g.graph.get("model") for g in (a, b)]
    if None not in models and models[0] != models[1]:
        notes.append(
            f"note: the circuits are of two models ({models[0]}, {models[1]}): their "
            "components are matched by name"
        )
    parallel = [bool(g.graph.get("parallel")) for g in (a, b)]
    if parallel[0] != parallel[1]:
        which, other = ("A", "B") if parallel[0] else ("B", "A")
        notes.append(
            f"note: graph {which}'s model runs attention and MLP in parallel (GPT-NeoX, "
            f"GPT-J), so it has no edge from a layer's heads to its MLP: graph {other}'s "
            "such edges have no match there"
        )
    return notes


def evaluate(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph | None) -> dict[str, float | None]:
    """Metrics against ``reference``; all None without one."""
    if reference is None:
        return empty_metrics()
    return score_graph(component_graph(graph), matching_reference(graph, reference))


FEATURE_COUNTS = (
    "n_features",
    "n_features_in_circuit",
    "n_feature_edges",
    "n_feature_edges_in_circuit",
)


def report(
    graph: nx.MultiDiGraph,
    reference: nx.MultiDiGraph | None,
    label: str | None,
    asked: int | None = None,
) -> dict[str, Any]:
    """The JSON summary of a discovery, scored against ``reference`` (named ``label``).
    Its warnings are the method's and the run's (:func:`run_warnings`; ``asked``: the
    prompts asked for, where the run had a count to meet)."""
    reference = matching_reference(graph, reference)  # once: evaluate finds it matched
    features = {n for n, kind in graph.nodes(data="kind") if kind == "feature"}
    feature_edges = [d for s, r, d in graph.edges(data=True) if s in features or r in features]
    counts = (  # a transcoder feature graph's, which the component counts leave out
        {
            "n_features": len(features),
            "n_features_in_circuit": sum(bool(graph.nodes[n]["in_circuit"]) for n in features),
            "n_feature_edges": len(feature_edges),
            "n_feature_edges_in_circuit": sum(bool(d["in_circuit"]) for d in feature_edges),
        }
        if features
        else dict.fromkeys(FEATURE_COUNTS)
    )
    graph = component_graph(graph)
    meta = graph.graph
    nodes = component_nodes(graph)
    method = METHODS.get(meta.get("method"))
    groups = position_groups(graph)
    summary = {
        "task": meta.get("task"),
        "task_file": meta.get("task_file"),  # a task file's path and the SHA-256 of its bytes
        "task_file_sha256": meta.get("task_file_sha256"),
        "method": meta.get("method"),
        "method_label": meta.get("method_label", meta.get("method")),  # eap[qk-fix=on]
        "model": meta.get("model"),
        "dtype": meta.get("dtype"),
        "device": meta.get("device"),
        "seed": meta.get("seed"),
        "n_prompts": meta.get("n_prompts"),
        "repeated_prompts": meta.get("repeated_prompts"),  # of them, repeats of an earlier one
        "prompt_parts": meta.get("prompt_parts"),  # how many parts the memory budget made
        "resident_parts": meta.get("resident_parts"),  # how many of them it kept cached
        "max_memory": meta.get("max_memory"),  # bytes: the budget, and a part's estimate
        "part_memory": meta.get("part_memory"),
        "positions": None if groups is None else list(groups),  # its nodes' position groups
        "position_aliases": position_aliases(graph) or None,  # {"END": "12"} (every position)
        "metric": meta.get("metric"),
        "corruption": meta.get("corruption"),
        "clean_metric": meta.get("clean_metric"),
        "corrupted_metric": meta.get("corrupted_metric"),
        # under mean or zero ablation: every node ablated, the baseline of every score
        "ablated_metric": meta.get("ablated_metric"),
        "clean_accuracy": meta.get("clean_accuracy"),
        "threshold": meta.get("threshold"),
        "top_k": meta.get("top_k"),
        "discovery_s": meta.get("discovery_s", meta.get("runtime_s")),
        "faithfulness_s": meta.get("faithfulness_s"),
        "runtime_s": meta.get("runtime_s"),
        "ablation": meta.get("ablation"),
        "backup_rounds": meta.get("backup_rounds", 0),
        "options": method_options_of(method, meta),
        "method_facts": method_facts_of(method, meta),
        "warnings": ([] if method is None else method.warnings(meta))
        + list(meta.get("task_warnings") or []),  # a task file's own
        "faithfulness": meta.get("faithfulness"),
        "faithfulness_prompts": meta.get("faithfulness_prompts"),  # its sample's size
        "cpr": meta.get("cpr"),
        "cmd": meta.get("cmd"),
        "n_nodes": len(nodes),
        "n_nodes_in_circuit": sum(bool(graph.nodes[n]["in_circuit"]) for n in nodes),
        "largest_score": max(
            [abs(graph.nodes[n].get("score") or 0.0) for n in nodes]
            + [abs(d.get("score") or 0.0) for _, _, d in graph.edges(data=True)],
            default=0.0,
        ),
        "n_edges": graph.number_of_edges(),
        "n_edges_in_circuit": sum(bool(d["in_circuit"]) for _, _, d in graph.edges(data=True)),
        **counts,  # null without features
        "reference": label,
        "metrics": evaluate(graph, reference),
        "overlap": None if reference is None else overlap(graph, reference),
    }
    summary["warnings"] += run_warnings(summary, asked)
    return summary


def method_facts_of(method: Method | None, meta: dict[str, Any]) -> dict[str, Any]:
    """The facts of its run a graph's method declares (its ``reported_facts``, None where
    this run did not record one) and any others it recorded."""
    declared = [] if method is None else [key for key, *_ in method.reported_facts]
    recorded = meta.get("method_fact_keys") or []
    return {key: meta.get(key) for key in dict.fromkeys([*declared, *recorded])}


def method_options_of(method: Method | None, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The method options a graph's metadata records (None for an unknown method)."""
    return None if method is None else {o.name: meta.get(o.name) for o in method.options}


# metrics at their optimum on the clean run: their gradient there is 0
FLAT = ("l2", "kl")
# a clean run past these has the answer's probability past 0.9 (mean log-prob log 0.9):
# the softmax is flat there, and the metric's gradient (1 - p of the answer) small
SATURATED = {"log-prob": math.log(0.9), "prob-diff": 0.9}
NOTHING = 1e-6  # scores (shares of the clean-corrupted gap) all below this are none
DIFFERENCES = ("logit-diff", "prob-diff")  # an answer against the wrong ones
UNMOVED = 1e-4  # a clean-corrupted gap under this share of the metric is no gap

# a clean-corrupted gap below these (logits, nats, probability) leaves shares of it noisy
SMALL_GAPS = {"logit-diff": 0.1, "log-prob": 0.1, "kl": 0.01, "prob-diff": 0.01}


def run_warnings(summary: dict[str, Any], asked: int | None) -> list[str]:
    """Warnings about a run as a whole: fewer prompts than ``asked`` for (the task has no
    more; None: no count was asked), a model that does not do the task (the corrupted
    prompts score at least as high as the clean ones) or barely does it (a gap under
    :data:`SMALL_GAPS`), a method that takes the metric's gradient at the clean run on a
    metric flat there, and an empty circuit (and why)."""
    said = []
    clean, corrupted = summary["clean_metric"], summary["corrupted_metric"]
    # under mean or zero ablation the scores are shares of clean - ablated, warned of below
    shares = summary.get("ablation") in (None, "corrupted")
    if (
        shares
        and clean is not None
        and corrupted is not None
        and abs(clean - corrupted) <= UNMOVED * max(abs(clean), abs(corrupted))
    ):
        said.append(
            f"the corrupted prompts' {summary['metric']} is the clean ones' (gap "
            f"{clean - corrupted:.2g}): the corruption changes nothing the metric reads, and "
            "every score is a share of rounding"
        )
    elif clean is not None and corrupted is not None and clean <= corrupted:
        said.append(
            f"the clean prompts' {summary['metric']} ({clean:.3g}) is not above the corrupted "
            f"ones' ({corrupted:.3g}): the model does not do this task"
            + (", and every score is a share of that backward gap" if shares else "")
        )
    elif (
        shares
        and clean is not None
        and corrupted is not None
        and clean - corrupted < SMALL_GAPS.get(summary["metric"], 0.0)
    ):
        said.append(
            f"the clean prompts' {summary['metric']} is only {clean - corrupted:.3g} above the "
            "corrupted ones': faithfulness, CPR and CMD are shares of that gap, and noise "
            "of its size swings them"
        )
    ablated = summary.get("ablated_metric")
    if clean is not None and ablated is not None and clean <= ablated:
        said.append(
            f"with every node {summary['ablation']}-ablated the {summary['metric']} "
            f"({ablated:.3g}) is not below the clean run's ({clean:.3g}): every score is a "
            "share of that backward gap"
        )
    if asked is not None and summary["n_prompts"] is not None and summary["n_prompts"] < asked:
        said.append(
            f"the task has {summary['n_prompts']} prompt pair"
            f"{'' if summary['n_prompts'] == 1 else 's'}: all of them ran (--n-prompts is "
            f"{asked})"
        )
    repeated = summary.get("repeated_prompts")
    if repeated and summary.get("task_file") is not None:  # a built-in task draws its
        # prompts at random, and may draw one twice (greater-than's 1000: about 20)
        said.append(
            f"{repeated} of the task's {summary['n_prompts']} prompt pairs repeat an earlier "
            f"one (the same tokens, positions and answers): the run has "
            f"{summary['n_prompts'] - repeated} distinct pairs, each weighed as often as it "
            "appears"
        )
    parts, kept = summary.get("prompt_parts"), summary.get("resident_parts")
    if parts and kept is not None and kept < parts:
        said.append(
            f"the memory budget kept {kept} of the {parts} prompt parts' cached runs between "
            "sweeps: the others' clean and corrupted runs were made again at every sweep "
            "(a pass, step or trial), so a larger --max-memory runs faster"
        )
    budget, part = summary.get("max_memory"), summary.get("part_memory")
    if budget and part and part > budget:  # a part is one prompt: it can be no smaller
        said.append(
            f"one prompt's caches and passes need about {size_text(part)}, over the memory "
            f"budget of {size_text(budget)} (--max-memory): the run went a prompt at a "
            "time and used more than the budget"
        )
    method, metric = METHODS.get(str(summary.get("method"))), summary["metric"]
    if method is not None and method.gradient_at_clean and metric in FLAT:
        # scores normalised after the gradient (HISP's per layer) look like effects
        task = TASKS.get(str(summary.get("task")))
        steeper = [m for m in (task.metrics if task else DIFFERENCES) if m not in FLAT]
        other = f", or --metric {' or '.join(steeper)}, not at its optimum" if steeper else ""
        said.append(
            f"{method.name} takes the gradient of {metric} at the clean run, its optimum, "
            f"where it is flat: its scores are float rounding, not effects (use eap-ig{other})"
        )
    elif (
        method is not None
        and method.gradient_at_clean
        and not method.normalised  # HISP's per-layer shares rank small gradients too
        and clean is not None
        and clean > SATURATED.get(metric, math.inf)
    ):
        task = TASKS.get(str(summary.get("task")))
        steeper = "logit-diff" if task is None or "logit-diff" in task.metrics else None
        wrongs = ", which needs wrong answers in the task file" if task is None else ""
        other = f", or --metric {steeper}{wrongs}" if steeper else ""
        said.append(
            f"{method.name} takes the gradient of {metric} at the clean run, where the "
            "answer's probability is near 1 and the softmax is flat: its scores fall "
            f"far short of the effects, and may all be under the threshold (use eap-ig{other})"
        )
    # what the method leaves to faithfulness, which --no-faithfulness does not measure
    faithful = summary.get("faithfulness_prompts") is not None
    target = method.target(summary.get("options") or {}) if method is not None else None
    if target and metric not in (None, *method.own_target_metrics):
        reads = "is what faithfulness reads" if faithful else "sets only the metrics shown"
        said.append(f"{method.name} {target}; {metric} {reads}")
    ablation = summary.get("ablation")
    patches = (
        "only sets what faithfulness patches with"
        if faithful
        else "sets nothing here (faithfulness is not measured)"
    )
    if method is not None and not method.reads_ablation and ablation not in (None, "corrupted"):
        said.append(
            f"{method.name} compares the codes of clean and negative activations whatever "
            f"--ablation is; {ablation} ablation {patches}"
        )
    own = method.own_ablation if method is not None else None
    # the default (corrupted) is no choice of the user's where nothing patches with it
    if own is not None and ablation not in (None, own) and (faithful or ablation != "corrupted"):
        said.append(
            f"{method.name} gates each node toward {own} whatever --ablation is, as its "
            f"authors define it; {ablation} ablation {patches}"
        )
    if summary.get("positions") == ["END", OTHER]:  # a trial's: --positions named, said nothing
        said.append(
            "the task names no position but END, so the circuit's positions are END and the "
            "rest (a task file names its own in each pair's 'positions': docs/task-files.md)"
        )
    if summary["n_nodes_in_circuit"] == 0:
        said.append(_empty_circuit(summary))
    said += faithless_match(summary.get("faithfulness"), summary.get("metrics") or {})
    return said


def saved_graph_notes(
    graph: nx.MultiDiGraph, reference: nx.MultiDiGraph, metrics: dict[str, Any]
) -> list[str]:
    """What ``circuitx score`` (and Python's) says of a saved graph scored against
    ``reference`` (``metrics``: :func:`evaluate`'s): :func:`scoring_notes` and, from the
    faithfulness the graph records, :func:`faithless_match`."""
    return scoring_notes(graph, reference) + faithless_match(
        graph.graph.get("faithfulness"), metrics, recorded=True
    )


FAR_FROM_WHOLE = 0.5  # a faithfulness this far from 1 (the whole model's) is not the circuit


def faithless_match(
    faithfulness: float | None, metrics: dict[str, Any], recorded: bool = False
) -> list[str]:
    """A circuit with exactly the reference's nodes (``metrics``: :func:`evaluate`'s)
    whose faithfulness is far from 1, because the edges among them it leaves out carry the
    effect where the reference does the task (a trial scored against a discovered circuit
    whose own faithfulness was 0.26; one read EAP's -0.34 on planted IOI beside node
    precision and recall 1.000); ``circuitx score`` says it as ``discover`` does, of the
    faithfulness the file ``recorded`` at discovery (a circuit edited since was not
    measured)."""
    recall = metrics.get("edge_recall")
    if (
        faithfulness is None
        or not math.isfinite(faithfulness)  # a file's NaN: no measurement to speak of
        or recall is None
        or recall >= 1.0
        or abs(faithfulness - 1.0) <= FAR_FROM_WHOLE
        or (metrics.get("node_precision"), metrics.get("node_recall")) != (1.0, 1.0)
    ):
        return []
    return [
        f"the circuit has exactly the reference's nodes, yet its faithfulness "
        f"{'recorded at discovery ' if recorded else ''}is "
        f"{faithfulness:.3g} (the whole model's is 1): it keeps {recall:.0%} of the "
        "reference's edges, and those it leaves out carry the effect where the reference's "
        "own circuit does the task (a ground truth's does; a discovered one may not)"
    ]


def _empty_circuit(summary: dict[str, Any]) -> str:
    """Why the circuit is empty: a selection of none, scores under the threshold, or no
    score at all."""
    if summary.get("top_k") == 0:
        return "no component is in the circuit: its selection keeps the top 0"
    if summary["largest_score"] >= NOTHING and summary.get("threshold") is not None:
        return (
            "no component is in the circuit: every score is below the threshold (lower "
            "--threshold or give --top-k)"
        )
    if summary["largest_score"] >= NOTHING and summary.get("top_k") is None:
        return (  # a selection of the method's own (the transcoder's path search)
            f"no component is in the circuit: {summary.get('method')}'s own selection kept "
            "none (see its options: circuitx methods)"
        )
    return f"no component is in the circuit: every score is under {NOTHING:g}"


def top_k_notes(layout: Layout, method_name: str, top_k: int) -> list[str]:
    """A note when ``--top-k`` is at least the number of components the method ranks in
    ``layout``: the circuit keeps them all."""
    node_level = METHODS[method_name].granularity == "node"
    # the input (at each position) is no node
    size = layout.n_senders - layout.inputs if node_level else len(layout.edges)
    if top_k < size:
        return []
    kind = "nodes" if node_level else "edges"
    return [
        f"note: --top-k {top_k} is at least the graph's {size} {kind}: the circuit keeps them all"
    ]
