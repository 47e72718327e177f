"""The patching engine every method runs on.

One engine per discovery: the clean and corrupted runs are made once, the clean run
caching the residual stream entering each block and the corrupted run every head's and
MLP's output, and patched forward passes are built from those caches.
Patched passes are batched: to patch k nodes one at a time over n prompts, the prompts
are stacked k times and copy j has node j patched, so one forward pass serves k nodes;
the pass starts from the cached clean residual stream at the earliest patched layer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from circuitx.errors import CircuitxError
from circuitx.graph import parse_node
from circuitx.models import Model, head_output_hook, mlp_output_hook, resid_pre_hook
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, TaskData

# Tokens in one patched forward pass. On CPU larger passes fall out of cache and run
# slower (measured on GPT-2-small shape: 16384 tokens/pass took 2x the time of 2048).
TOKENS_PER_PASS = {"cpu": 2048, "cuda": 32768}


class PatchingEngine:
    """Cached clean and corrupted runs of one task batch, and patched runs built from them."""

    def __init__(
        self,
        model: Model,
        task: Task,
        data: TaskData,
        metric: str = "logit-diff",
        tokens_per_pass: int | None = None,
    ) -> None:
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.end = data.positions["END"]
        self.tokens_per_pass = tokens_per_pass or TOKENS_PER_PASS.get(model.device.type, 2048)
        layers = range(model.n_layers)
        self.clean_final, self.clean_cache = model.run_with_cache(
            data.clean, [resid_pre_hook(layer) for layer in layers], self.end
        )
        self.corrupted_final, self.corrupted_cache = model.run_with_cache(
            data.corrupted, model.output_hooks(), self.end
        )
        self.clean_metric = float(self.metric(self.clean_final).mean())
        self.corrupted_metric = float(self.metric(self.corrupted_final).mean())

    def metric(self, final: torch.Tensor) -> torch.Tensor:
        """Per-prompt task metric of END logits [..., n, vocab]."""
        return self.task.metric(self.metric_name, final, self.data, self.clean_final)

    def normalised_effect(self, patched_metric: torch.Tensor) -> torch.Tensor:
        """(clean - patched) / (clean - corrupted): 1 where a patch removes the whole effect."""
        gap = self.clean_metric - self.corrupted_metric
        if abs(gap) < 1e-9:
            raise CircuitxError(
                f"clean and corrupted prompts give the same {self.metric_name} "
                f"({self.clean_metric:.3g}); there is no effect to attribute"
            )
        return (self.clean_metric - patched_metric) / gap

    def patch_each_node(self, nodes: Sequence[str], advance: Advance = no_progress) -> torch.Tensor:
        """Mean metric [len(nodes)] when each node alone carries its corrupted output."""
        n, width = self.data.clean.shape
        copies = max(1, self.tokens_per_pass // (n * width))
        by_layer = sorted(range(len(nodes)), key=lambda i: parse_node(nodes[i])[1] or 0)
        results = torch.empty(len(nodes))
        for start in range(0, len(nodes), copies):
            chunk = by_layer[start : start + copies]
            results[chunk] = self._patched_metric([nodes[i] for i in chunk]).cpu()
            advance(len(chunk))
        return results

    def patch_together(self, nodes: Sequence[str]) -> float:
        """Mean metric when all of ``nodes`` carry their corrupted outputs at once."""
        if not nodes:
            return self.clean_metric
        final = self._run_patched(nodes, [0] * len(nodes), 1)
        return float(self.metric(final[0]).mean())

    def _patched_metric(self, chunk: list[str]) -> torch.Tensor:
        """Mean metric per node of ``chunk``, patching node j in copy j of the batch."""
        final = self._run_patched(chunk, list(range(len(chunk))), len(chunk))
        return self.metric(final).mean(-1)

    def _run_patched(self, nodes: Sequence[str], copies: Sequence[int], k: int) -> torch.Tensor:
        """END logits [k, n, vocab] of the batch stacked k times, node i patched in copy
        ``copies[i]``; the pass starts at the earliest patched layer."""
        n = self.data.n_prompts
        heads: dict[int, list[tuple[int, int]]] = defaultdict(list)
        mlps: dict[int, list[int]] = defaultdict(list)
        for copy, node in zip(copies, nodes):
            kind, layer, head = parse_node(node)
            if kind == "head":
                heads[layer].append((copy, head))
            elif kind == "mlp":
                mlps[layer].append(copy)
            else:
                raise CircuitxError(f"cannot patch node {node!r}: only heads and MLPs")
        hooks = []
        first_layer = min([*heads, *mlps])
        for layer, pairs in heads.items():
            name = head_output_hook(layer)
            copy_idx, head_idx = torch.tensor(pairs, device=self.model.device).T
            hooks.append((name, _patch_heads(self.corrupted_cache[name], k, copy_idx, head_idx)))
        for layer, copy_list in mlps.items():
            name = mlp_output_hook(layer)
            copy_idx = torch.tensor(copy_list, device=self.model.device)
            hooks.append((name, _patch_copies(self.corrupted_cache[name], k, copy_idx)))
        resid = self.clean_cache[resid_pre_hook(first_layer)].repeat(k, 1, 1)
        final = self.model.run(resid, hooks, self.end.repeat(k), start_at_layer=first_layer)
        return final.view(k, n, -1)


def _patch_heads(source: torch.Tensor, k: int, copy_idx: torch.Tensor, head_idx: torch.Tensor):
    """Hook on z [k*n, pos, head, d_head]: copy c gets head h from ``source`` for each (c, h)."""
    values = source[:, :, head_idx].permute(2, 0, 1, 3)  # [pairs, n, pos, d_head]

    def hook(z: torch.Tensor) -> torch.Tensor:
        stacked = z.reshape(k, -1, *z.shape[1:])
        stacked[copy_idx, :, :, head_idx] = values.to(z.dtype)
        return stacked.reshape(z.shape)

    return hook


def _patch_copies(source: torch.Tensor, k: int, copy_idx: torch.Tensor):
    """Hook on an output [k*n, pos, d_model]: the copies in ``copy_idx`` get ``source``."""

    def hook(out: torch.Tensor) -> torch.Tensor:
        stacked = out.reshape(k, -1, *out.shape[1:])
        stacked[copy_idx] = source.to(out.dtype)
        return stacked.reshape(out.shape)

    return hook
