"""The high-level model of a tracr program: its RASP values are the variables.

Each value a head or MLP of the compiled model computes is a variable, aligned to the
components that write it, at the same layer and head of the low-level model (InterpBench's
alignment). A ``SelectorWidth`` compiles to a head and an MLP; both are its variable's.
Outputs come from RASP's own evaluator, with an intervened value replaced by its value on
the source input.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch

from circuitx.builtin.hf import token_list_tokenizer
from circuitx.builtin.tracr import TRACR, compile_program, ground_truths
from circuitx.builtin.tracr.circuit import written_values
from circuitx.builtin.tracr.convert import convert
from circuitx.builtin.tracr.programs import tracr_modules
from circuitx.builtin.trained.hl import CLASS, SHAPE, VALUE, HighLevelModel, Readout, Target
from circuitx.reference import reshaped
from circuitx.tasks.tracr import TracrProgram, all_inputs

SELECTOR_WIDTH_SUFFIX = "_selector_width_attn_output"  # tracr's hidden value of a width


def tracr_alignment(assembled: Any) -> dict[str, tuple[str, ...]]:
    """RASP value label -> the compiled model's heads and MLPs that compute it."""
    alignment: dict[str, list[str]] = {}
    for node, values in written_values(assembled).items():
        for value in sorted(values):
            nodes = alignment.setdefault(value.removesuffix(SELECTOR_WIDTH_SUFFIX), [])
            if node not in nodes:
                nodes.append(node)
    return {value: tuple(nodes) for value, nodes in sorted(alignment.items())}


class TracrHighLevel(HighLevelModel):
    """A compiled RASP ``program`` as a causal model over every input ``described`` draws."""

    def __init__(
        self, program: Any, assembled: Any, described: TracrProgram, tokens: list[str]
    ) -> None:
        self.name = described.name
        self._program = program
        self.rows = all_inputs(described)
        encode = {name: index for index, name in enumerate(tokens)}
        self.inputs = torch.tensor(
            [[encode[described.bos], *(encode[str(v)] for v in row)] for row in self.rows]
        )
        self.readout = Readout(
            torch.arange(1, described.length + 1).expand(len(self.inputs), -1),
            tuple(described.output_tokens),
            VALUE if described.numerical else CLASS,
        )
        self._classes = {value: i for i, value in enumerate(described.output_values)}
        sops = {expr.label: expr for expr in _sops(program)}
        self.alignment = {k: v for k, v in tracr_alignment(assembled).items() if k in sops}
        self._sops = sops
        self._values: dict[tuple[int, int | None, str | None], list[Any]] = {}
        self._plain: dict[tuple[str, int], list[Any]] = {}

    def value(self, label: str, row: int) -> list[Any]:
        """RASP value ``label`` on input ``row``, one entry per position (each evaluated
        once: a source's value serves every base it is patched into)."""
        if (label, row) not in self._plain:
            self._plain[label, row] = self._evaluate(row, {}, label)
        return self._plain[label, row]

    def _evaluate(self, row: int, fixed: dict[str, list[Any]], label: str) -> list[Any]:
        evaluator = _evaluator_class()(fixed)
        return evaluator.evaluate(self._sops[label], list(self.rows[row]))

    def _output(self, base: int, source: int | None, variable: str | None) -> list[Any]:
        key = (base, source, variable)
        if key not in self._values:
            fixed = {} if variable is None else {variable: self.value(variable, source)}
            self._values[key] = self._evaluate(base, fixed, self._program.label)
        return self._values[key]

    def outputs(
        self, base: torch.Tensor, source: torch.Tensor | None = None, variable: str | None = None
    ) -> torch.Tensor:
        sources = [None] * len(base) if source is None else source.tolist()
        rows = [
            self._output(b, s if variable else None, variable)
            for b, s in zip(base.tolist(), sources)
        ]
        if self.readout.kind == VALUE:
            return torch.tensor(rows, dtype=torch.float32)
        return torch.tensor([[self._classes[v] for v in row] for row in rows])


def _sops(program: Any) -> list[Any]:
    """Every RASP expression ``program`` depends on, itself included."""
    seen: dict[int, Any] = {}
    stack = [program]
    while stack:
        expr = stack.pop()
        if id(expr) not in seen:
            seen[id(expr)] = expr
            stack.extend(expr.children)
    return list(seen.values())


@functools.cache
def _evaluator_class() -> type:
    """RASP's evaluator with some values fixed (by label), each expression evaluated once
    (a subclass made on first use: tracr is an optional dependency)."""
    _, _, rasp = tracr_modules()

    class Evaluator(rasp.DefaultRASPEvaluator):
        def __init__(self, fixed: dict[str, list[Any]]) -> None:
            super().__init__()
            self.fixed, self.memo = fixed, {}

        def evaluate(self, expr: Any, xs: Any) -> Any:
            if expr.label in self.fixed:
                return self.fixed[expr.label]
            if expr.label not in self.memo:
                self.memo[expr.label] = super().evaluate(expr, xs)
            return self.memo[expr.label]

    return Evaluator


def tracr_target(tracr_name: str) -> Callable[[str], Target]:
    """The target of a built-in tracr program: its RASP values in a wider GPT-2."""

    def make(name: str) -> Target:
        from transformers import GPT2Config

        spec = TRACR[tracr_name]
        program = spec.program()
        assembled = compile_program(program, set(spec.vocab), spec.max_seq_len)
        converted = convert(assembled, program, tracr_name, spec.inputs, spec.length)
        described = dataclasses.replace(converted.program, name=name)
        hl = TracrHighLevel(program, assembled, described, converted.tokens)
        compiled = assembled.model_config
        tokens = converted.tokens
        config = GPT2Config(
            vocab_size=len(tokens),
            n_positions=spec.max_seq_len + 1,
            n_layer=max(2, compiled.num_layers),
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tokens.index(described.bos),
            eos_token_id=tokens.index(described.bos),
            pad_token_id=tokens.index(described.pad),
            tie_word_embeddings=False,
            is_causal=False,  # tracr's attention is bidirectional
            **SHAPE,
        )
        circuits = {
            task: reshaped(graph, f"{name} ground truth", config.n_layer, config.n_head)
            for task, graph in ground_truths(assembled, converted.output_dims, tracr_name).items()
        }
        return Target(
            hl,
            config,
            token_list_tokenizer(tokens, described.bos, described.pad),
            described.write,
            circuits,
        )

    return make
