"""Planted-circuit models: models whose circuit is known by construction.

Each is built in code (hand-set weights, a word-level tokenizer, no download), saved as a
Hugging Face model directory with its ground-truth circuit(s) in ``circuit.json``, and
loaded by the same loader as any model (see :mod:`circuitx.builtin`). ``planted-<task>``
solves one task (``planted-colored-objects`` solves IOI too, with shared heads);
``planted-<task>-hard`` adds a backup head that takes over when the main one is patched
away (self-repair) and distractors with four times the output norm. They are GPT-2 models
but ``planted-ioi-llama``: IOI's circuit on a Llama model (RMSNorm, rotary positions, gated
MLPs, grouped-query attention; see :mod:`.rotary`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import networkx as nx

from circuitx.builtin.ground_truth import write_ground_truth
from circuitx.builtin.planted.design import Circuit
from circuitx.graph import HEAD_INPUTS
from circuitx.reference import mark_edge, put_in_circuit, reference_graph

SEED = 0  # the distractors' random weights; part of each model's definition


@dataclass(frozen=True)
class PlantedModel:
    name: str
    task: str  # the task it is built for (colored-objects' model also solves ioi)
    hard: bool
    module: str  # circuitx.builtin.planted.<module> has build(...) and circuits(...)
    args: tuple[bool, ...] = ()  # leading arguments of both (the entity design's ``colored``)
    task_modules: tuple[str, ...] = ()  # the task modules whose words and prompts it is built for
    uses: tuple[str, ...] = ()  # other modules of this package its module builds on
    architecture: str = "GPT-2"

    def _module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module}")

    def sources(self) -> list[str]:
        """The modules whose code defines this model (see ``BuiltinModel.identity``)."""
        own = ("design", *self.uses, self.module)
        return [__name__, *(f"{__name__}.{m}" for m in own), *self.task_modules]

    def shape(self) -> tuple[int, int]:
        module = self._module()
        return module.N_LAYERS, module.N_HEADS

    def circuits(self) -> dict[str, nx.MultiDiGraph]:
        """Ground-truth circuit graphs by task (no weights are built)."""
        found = self._module().circuits(*self.args, self.hard)
        return {task: self._graph(task, circuit) for task, circuit in found.items()}

    def save(self, directory: Path) -> None:
        """Build the weights and tokenizer into ``directory``, with the ground truth."""
        design, found = self._module().build(*self.args, self.hard, SEED)
        design.save(directory)
        write_ground_truth(directory, {task: self._graph(task, c) for task, c in found.items()})

    def _graph(self, task: str, circuit: Circuit) -> nx.MultiDiGraph:
        graph = reference_graph(f"{self.name} ground truth", *self.shape(), True)
        graph.graph.update(task=task, model=self.name, backups=",".join(circuit.backups))
        for node, role in circuit.roles.items():
            put_in_circuit(graph, [node], role)
        for sender, receiver, inputs in circuit.edges:
            mark_edge(graph, sender, receiver, inputs or HEAD_INPUTS)
        return graph


def _models() -> dict[str, PlantedModel]:
    tasks = "circuitx.tasks."
    kinds = {
        "ioi": ("entity", (False,), ("ioi",)),
        "greater-than": ("greater_than", (), ("greater_than",)),
        "docstring": ("docstring", (), ("docstring",)),
        "colored-objects": ("entity", (True,), ("ioi", "colored_objects")),
    }
    models = {}
    for task, (module, args, task_modules) in kinds.items():
        for hard in (False, True):
            name = f"planted-{task}" + ("-hard" if hard else "")
            sources = tuple(tasks + m for m in ("base", *task_modules))
            models[name] = PlantedModel(name, task, hard, module, args, sources)
    ioi_sources = tuple(tasks + m for m in ("base", "ioi"))
    models["planted-ioi-llama"] = PlantedModel(
        "planted-ioi-llama",
        "ioi",
        False,
        "ioi_llama",
        (),
        ioi_sources,
        ("rotary", "entity"),
        "Llama (RMSNorm, rotary, gated MLPs, grouped-query attention)",
    )
    return models


PLANTED: dict[str, PlantedModel] = _models()
