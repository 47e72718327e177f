import pytest

import circuitx as cx
from circuitx.discovery.references import reference_for_graph, resolve_reference
from circuitx.errors import CircuitxError
from circuitx.graph import full_graph


def test_auto_goes_without_a_reference_on_a_model_that_only_says_it_is_the_papers():
    """A small model whose config names GPT-2 small: ``auto`` notes why there is no
    reference and the run goes on; asking for the reference by name is still an error."""
    reference, label, why_not = resolve_reference(
        "auto", "ioi", "openai-community/gpt2", (2, 4, True)
    )
    assert reference is None and label is None
    assert why_not.startswith("no reference: the ioi reference circuit needs at least 12 layers")
    assert why_not.endswith("(the model says it is openai-community/gpt2)")
    with pytest.raises(CircuitxError, match="needs at least 12 layers"):
        resolve_reference("ioi", "ioi", "openai-community/gpt2", (2, 4, True))
    reference, label, _ = resolve_reference("auto", "ioi", "openai-community/gpt2", (12, 12, True))
    assert label == "ioi" and reference.number_of_nodes() > 0


@pytest.mark.parametrize(
    "meta, why",
    [
        ({}, "the graph records no task (a graph from another tool)"),
        (
            {"task": "mine", "task_file": "/d/mine.jsonl"},
            "the graph's task is the task file /d/mine.jsonl, which has no circuit of its own",
        ),
        ({"task": "mine"}, "the graph's task mine is not a built-in task, so it has no circuit"),
    ],
)
def test_auto_says_why_a_graph_has_no_reference(meta, why):
    """A helper's trial: a task file's graph was said to name "no known task"."""
    graph = full_graph(2, 2, True, model="my-llama", **meta)
    assert reference_for_graph(graph, "auto")[:2] == (None, None)
    assert reference_for_graph(graph, "auto")[2].startswith(f"no reference: {why}")
    # a trial's: a built-in model's name works too, and the line said FILE alone
    assert reference_for_graph(graph, "auto")[2].endswith(
        "pass --reference FILE, or --reference MODEL for a built-in model's ground truth "
        "(circuitx models lists them)"
    )


def test_python_says_reference_where_the_command_line_says_the_option():
    with pytest.raises(
        CircuitxError,
        match=r"has no circuit of its own; pass reference=FILE, or reference=MODEL for a",
    ):
        cx.score(full_graph(2, 2, True, task="mine", task_file="/d/mine.jsonl"))
    graph = full_graph(12, 12, True, task="ioi", model="my-model")  # not the paper's model
    with pytest.raises(CircuitxError, match="pass reference=ioi to use it here$"):
        cx.score(graph)  # the command line's "--reference ioi" had read "reference=... ioi"


def test_auto_offers_the_task_reference_only_where_it_fits():
    """A helper's trial: on a 2 x 4 model the note said "pass --reference ioi to use it
    here", which then failed, after the model loaded, as too small."""
    _, _, small = resolve_reference("auto", "ioi", "my-model", (2, 4, True))
    assert "it does not fit this model (the ioi reference circuit needs at least" in small
    assert "pass --reference" not in small
    _, _, large = resolve_reference("auto", "ioi", "my-model", (12, 12, True))
    assert large.endswith("pass --reference ioi to use it here")


def test_a_saved_relational_graph_is_told_to_discover_its_reference():
    """A trial: score on a colored-objects graph said to pass --reference colored-objects,
    which then said to discover the IOI circuit and pass its file: a circle."""
    graph = full_graph(12, 12, True, task="colored-objects", model="random-12x12")
    _, _, why = reference_for_graph(graph, "auto")
    assert "pass --reference colored-objects" not in why
    assert why.endswith("circuitx discover --task ioi ... --out FILE) and pass --reference FILE")
    with pytest.raises(CircuitxError, match="discover it"):
        reference_for_graph(graph, "colored-objects")
