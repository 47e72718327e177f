"""Greater-than (Hanna et al. 2023), on GPT-2 small.

Prompt: "The [NOUN] lasted from the year [XX][YY] to the year [XX]"; the model should
put its probability on two-digit tokens above YY. Years run 1100-1799 and are kept only
where " XXYY" tokenises as exactly the tokens " XX" and "YY", YY in 02..98, dropping the
first and last such year of each century (ACDC's and Hanna et al.'s rule). The corrupted
prompt sets YY to 01. Positions: NOUN, XX1, YY, END.
Metric ``prob-diff``: softmax over the vocabulary at END, then the summed probability of
the two-digit tokens above YY minus that of those at or below it.

References. ACDC's version (default): heads 0.3, 0.5 (group 0305), 0.1 (01), MLPs 0-3
(MEARLY), heads 5.5, 6.1, 6.9, 7.10, 8.11, 9.1 (AMID), MLPs 8-11 (MLATE): 9 heads and
8 MLPs, with ACDC's edges: input -> {0305, 01, MEARLY}; {AMID, MLATE} -> logits; MLPs
within MEARLY and within MLATE; 01 -> MEARLY, 01 -> AMID, 0305 -> AMID, MEARLY -> AMID,
AMID -> MLATE; every MLP into every later MLP below the last AMID layer; every MLP into
the query of each later AMID head. The last two rules give edges at MLPs 4-7, which ACDC
does not list as circuit nodes; we keep both as ACDC has them (235 edges, 262 in ACDC's
counting). ``greater-than:hanna`` swaps in the AMID heads of Hanna et al.'s own code
(5.5, 5.1, 6.9, 7.10, 8.8, 8.11, 9.1).
"""

from __future__ import annotations

import random
from itertools import combinations
from typing import TYPE_CHECKING

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.graph import INPUT, LOGITS, head_node, mlp_node
from circuitx.reference import mark_edge, put_in_circuit, reference_graph, require_shape
from circuitx.tasks import base as _tasks

if TYPE_CHECKING:
    from circuitx.models import Model

TEMPLATE = "The [NOUN] lasted from the year [XX][YY] to the year [XX]"
NOUNS = (
    "war campaign siege reign dynasty voyage journey expedition trial treaty "
    "rebellion famine plague drought occupation invasion crusade alliance marriage "
    "friendship rivalry dispute conflict struggle revolt empire kingdom project "
    "study construction tour pilgrimage quest exile captivity"
).split()
CENTURIES = range(11, 18)
CORRUPTED_YY = 1

HEADS_0305 = ((0, 3), (0, 5))
HEADS_01 = ((0, 1),)
MLPS_EARLY = (0, 1, 2, 3)
HEADS_AMID = ((5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1))
HEADS_AMID_HANNA = ((5, 5), (5, 1), (6, 9), (7, 10), (8, 8), (8, 11), (9, 1))
MLPS_LATE = (8, 9, 10, 11)
GROUP_EDGES = (
    ("01", "MEARLY"),
    ("01", "AMID"),
    ("0305", "AMID"),
    ("MEARLY", "AMID"),
    ("AMID", "MLATE"),
)


class GreaterThanTask(_tasks.Task):
    name = "greater-than"
    circuit_positions = ("YY", "END")
    role_positions = {  # the year's MLPs at YY; the heads at END read it; then the MLPs there
        "year encoder": ("YY", ()),
        "year head": ("END", ("YY",)),
        "backup year head": ("END", ("YY",)),
        "comparator": ("END", ()),
        "MEARLY": ("YY", ()),
        "AMID": ("END", ("YY",)),
        "MLATE": ("END", ()),
    }
    title = "Greater-than (year spans)"
    default_model = "gpt2"
    paper_model = "openai-community/gpt2"
    metrics = ("prob-diff", "kl")
    corruptions = ("yy-01",)
    reference_variants = {
        "": "ACDC's version of Hanna et al. 2023: 9 heads, 8 MLPs, ACDC's group edges",
        "hanna": "AMID heads as in Hanna et al.'s code (5.1 and 8.8 in, 6.1 out)",
    }

    def vocabulary(self) -> list[str]:
        digits = [f"{i:02d}" for i in range(100)]
        return _tasks.words_of(TEMPLATE, " ".join(NOUNS)) + digits

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> _tasks.TaskData:
        digit_ids = two_digit_tokens(model)
        years = valid_years(model, digit_ids)
        noun_ids = {n: _tasks.single_token(model, " " + n) for n in NOUNS}
        nouns = [n for n, token in noun_ids.items() if token is not None]
        if not years or not nouns:
            raise CircuitxError(
                "greater-than needs years that tokenise as ' XX' + 'YY' and single-token nouns; "
                f"this tokenizer gives {len(years)} years and {len(nouns)} nouns"
            )
        rng = random.Random(seed)
        chosen = [(rng.choice(nouns), rng.choice(years)) for _ in range(n_prompts)]
        clean = [prompt_text(noun, year) for noun, year in chosen]
        corrupted = [prompt_text(noun, year // 100 * 100 + CORRUPTED_YY) for noun, year in chosen]
        clean_tokens, corrupted_tokens, lengths = _tasks.encode_pairs(
            model, self.name, clean, corrupted
        )
        yy = torch.tensor([year % 100 for _, year in chosen])
        positions = _tasks.position_table(("NOUN", "XX1", "YY", "END"), n_prompts)
        for i, (noun, year) in enumerate(chosen):
            row = clean_tokens[i, : lengths[i]]
            noun_at = _tasks.occurrences(row, noun_ids[noun])
            yy_at = _tasks.occurrences(row, digit_ids[year % 100])
            # the YY token follows the first XX; with a word-level tokenizer XX may equal YY
            yy_at = [p for p in yy_at if p > 0 and row[p - 1] == row[lengths[i] - 1]][:1]
            if len(noun_at) != 1 or not yy_at:
                raise CircuitxError(
                    f"greater-than prompt does not tokenise as the task needs: {clean[i]!r}"
                )
            changed = _tasks.changed_positions(row, corrupted_tokens[i, : lengths[i]])
            if changed != yy_at:
                raise CircuitxError(
                    f"greater-than corrupted prompt changes more than YY: {corrupted[i]!r}"
                )
            positions["NOUN"][i], positions["YY"][i] = noun_at[0], yy_at[0]
            positions["XX1"][i] = yy_at[0] - 1
            positions["END"][i] = lengths[i] - 1
        return _tasks.TaskData(
            clean=clean_tokens,
            corrupted=corrupted_tokens,
            positions=positions,
            answer=digit_ids[yy],
            wrong=digit_ids[torch.full_like(yy, CORRUPTED_YY)],
            clean_prompts=clean,
            corrupted_prompts=corrupted,
            extra={"digit_tokens": digit_ids, "yy": yy},
            row_extra=("yy",),
            lengths=torch.tensor(lengths),
        )

    def metric(
        self, name: str, final: torch.Tensor, data: _tasks.TaskData, clean_final: torch.Tensor
    ) -> torch.Tensor:
        if name != "prob-diff":
            return super().metric(name, final, data, clean_final)
        probs = final.softmax(-1)[..., data.extra["digit_tokens"].to(final.device)]  # [..., n, 100]
        above = _above_yy(data).to(final.device)  # [n, 100]
        return (probs * above).sum(-1) - (probs * ~above).sum(-1)

    def logit_direction(self, data: _tasks.TaskData, d_vocab: int) -> torch.Tensor:
        """The mean logit of the years above YY minus that of the years up to YY (what the
        transcoder method traces for greater-than; the authors' notebook traces two years'
        unembedding difference on one prompt)."""
        above = _above_yy(data).float()
        weights = above / above.sum(1, keepdim=True).clamp_min(1) - (1 - above) / (1 - above).sum(
            1, keepdim=True
        ).clamp_min(1)
        direction = torch.zeros(data.n_prompts, d_vocab)
        direction[:, data.extra["digit_tokens"]] = weights
        return direction

    def correct(self, final: torch.Tensor, data: _tasks.TaskData) -> torch.Tensor:
        """The most likely two-digit token is above YY."""
        top = final[..., data.extra["digit_tokens"].to(final.device)].argmax(-1)
        return top > data.extra["yy"].to(final.device)

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        amid = HEADS_AMID_HANNA if variant == "hanna" else HEADS_AMID
        label = f"greater-than:{variant}" if variant else "greater-than"
        heads = [*HEADS_0305, *HEADS_01, *amid]
        require_shape(label, n_layers, n_heads, has_mlp, heads, [*MLPS_EARLY, *MLPS_LATE])
        graph = reference_graph(label, n_layers, n_heads, has_mlp)
        graph.graph["task"] = self.name
        groups = {
            "0305": [head_node(*h) for h in HEADS_0305],
            "01": [head_node(*h) for h in HEADS_01],
            "MEARLY": [mlp_node(layer) for layer in MLPS_EARLY],
            "AMID": [head_node(*h) for h in amid],
            "MLATE": [mlp_node(layer) for layer in MLPS_LATE],
        }
        for group, nodes in groups.items():
            put_in_circuit(graph, nodes, group)
        for receiver in groups["0305"] + groups["01"] + groups["MEARLY"]:
            mark_edge(graph, INPUT, receiver)
        for sender in groups["AMID"] + groups["MLATE"]:
            mark_edge(graph, sender, LOGITS)
        for group in ("MEARLY", "MLATE"):
            for sender, receiver in combinations(groups[group], 2):
                mark_edge(graph, sender, receiver)
        for sender_group, receiver_group in GROUP_EDGES:
            for sender in groups[sender_group]:
                for receiver in groups[receiver_group]:
                    mark_edge(graph, sender, receiver)
        last_amid_layer = max(layer for layer, _ in amid)
        for sender, receiver in combinations(range(last_amid_layer), 2):
            mark_edge(graph, mlp_node(sender), mlp_node(receiver))
        for layer, head in amid:
            for sender in range(layer):
                mark_edge(graph, mlp_node(sender), head_node(layer, head), "q")
        return graph


def prompt_text(noun: str, year: int) -> str:
    return (
        TEMPLATE.replace("[NOUN]", noun)
        .replace("[XX][YY]", str(year))
        .replace("[XX]", str(year // 100))
    )


def _above_yy(data: _tasks.TaskData) -> torch.Tensor:
    """[n, 100] bool: is two-digit value j above prompt i's YY?"""
    return torch.arange(100) > data.extra["yy"].unsqueeze(-1)


def two_digit_tokens(model: "Model") -> torch.Tensor:
    """Ids [100] of the tokens "00" .. "99"; each must be a single token."""
    ids = [_tasks.single_token(model, f"{i:02d}") for i in range(100)]
    missing = [f"{i:02d}" for i, token in enumerate(ids) if token is None]
    if missing:
        raise CircuitxError(
            f"greater-than needs every two-digit number as one token; {model.name} lacks "
            f"{', '.join(missing[:5])} (the built-in planted-greater-than and random-12x12 "
            "have them all)"
        )
    return torch.tensor(ids)


def valid_years(model: "Model", digit_ids: torch.Tensor) -> list[int]:
    """Years whose " XXYY" tokenises as " XX", "YY", YY in 02..98, each century's first and
    last such year dropped."""
    years = []
    for century in CENTURIES:
        xx = _tasks.single_token(model, f" {century}")
        kept = [
            year
            for year in range(century * 100 + 2, century * 100 + 99)
            if xx is not None and model.encode(f" {year}") == [xx, int(digit_ids[year % 100])]
        ]
        years += kept[1:-1]
    return years
