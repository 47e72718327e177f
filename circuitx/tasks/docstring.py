"""Docstring (Heimersheim & Janiak 2023), on the attention-only model attn-only-4l.

A prompt is a Python method with six parameters and a reST docstring documenting two of
them; it stops at the third ``:param`` and the model should name the next parameter
(as ACDC's generator builds it):

    def old(self, first, files, page, names, size, read):
        \"\"\"sector gap population

        :param page: message tree
        :param names: detail mine
        :param

Parameters 3-5 (A, B, C) are the documented ones, C is the answer; two parameters come
before them and one after. Each prompt draws 15 distinct names: the method's, the six
parameters', and the ones the corruptions use. Metric ``logit-diff``: logit of C minus the
largest logit of the 13 other names drawn for the prompt (ACDC's wrong labels).
Corruptions (``--corruption``, ACDC's names):
random_random (default) A, B, C in the def and A, B in the docstring all become fresh names;
random_def: A, B in the def become fresh names; random_doc: A, B in the docstring become
fresh names; random_answer: C in the def becomes a fresh name; random_def_doc and
random_answer_doc: both changes at once. As in ACDC's generator, random_def and
random_doc draw the same two fresh names, so random_def_doc documents its def's own
parameters under new names (the pattern kept, still pointing at C).
Positions: A_def, B_def, C_def, A_doc, B_doc, END.

References: ACDC's 37-edge graph (heads 0.5, 1.2, 1.4, 2.0, 3.0, 3.6; 24 edges in our
naming plus 13 head-input edges in ACDC's counting) and ``docstring:oneill-bui``, the same
edges with head 1.0 in place of 1.2 (O'Neill & Bui's ground truth). On a model with MLPs
the MLPs are outside the reference: the published circuit is for an attention-only model.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.graph import INPUT, LOGITS, head_node
from circuitx.reference import Head, mark_edge, put_in_circuit, reference_graph, require_shape
from circuitx.tasks import base as _tasks

if TYPE_CHECKING:
    from circuitx.models import Model

NAMES = (
    "old first files page names size read data value key item path file line text node "
    "user state model count index query result config option source target error "
    "image label color width height title content message field filter group order "
    "parent child token request response client server port host action event "
    "context record table column row shape mode level step number name type list"
).split()
NOUNS = (
    "sector gap population message tree detail mine oil column piece crime unit dark "
    "river boat cloud metal forest garden bridge castle engine stone window market "
    "paper glass silver winter summer island valley storm flower horse bird tower "
    "army court music school kitchen letter chair coffee doctor farmer hotel"
).split()
CORRUPTIONS = (
    "random_random",
    "random_def",
    "random_doc",
    "random_answer",
    "random_def_doc",
    "random_answer_doc",
)
N_DRAWN = 15  # method name, 6 parameters, 8 fresh names for corruptions

HEADS = {"0.5": (0, 5), "1.2": (1, 2), "1.4": (1, 4), "2.0": (2, 0), "3.0": (3, 0), "3.6": (3, 6)}
# ACDC's get_docstring_subgraph_true_edges: (sender, receiver, receiver inputs).
EDGES = (
    ("input", "0.5", "v"),
    ("input", "1.4", "v"),
    ("0.5", "1.4", "v"),
    ("input", "1.2", "qk"),
    ("0.5", "1.2", "qk"),
    ("input", "2.0", "qk"),
    ("0.5", "2.0", "qk"),
    ("1.4", "2.0", "v"),
    *(
        edge
        for mover in ("3.0", "3.6")
        for edge in (
            (mover, "logits", ""),
            ("1.4", mover, "q"),
            ("input", mover, "v"),
            ("0.5", mover, "v"),
            ("2.0", mover, "k"),
            ("1.2", mover, "k"),
        )
    ),
)


class DocstringTask(_tasks.Task):
    name = "docstring"
    circuit_positions = ("A_def", "B_def", "C_def", "A_doc", "B_doc", "END")
    role_positions = {  # the planted design's heads (docs/planted.md)
        "previous parameter": ("C_def", ("B_def",)),  # C's prev2 holds B
        "documented name": ("END", ("B_doc",)),
        "mover": ("END", ("C_def",)),
        "backup mover": ("END", ("C_def",)),
    }
    title = "Docstring parameter completion"
    default_model = "attn-only-4l"
    paper_model = "NeelNanda/Attn_Only_4L512W_C4_Code"
    corruptions = CORRUPTIONS
    reference_variants = {
        "": "ACDC's 37-edge graph of Heimersheim & Janiak: heads 0.5 1.2 1.4 2.0 3.0 3.6",
        "oneill-bui": "O'Neill & Bui's ground truth: head 1.0 in place of 1.2, same edges",
    }

    def vocabulary(self) -> list[str]:
        code = 'def (self, ):\n    """\n    :param :'
        return _tasks.words_of(code, " ".join(NAMES), " ".join(NOUNS))

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> _tasks.TaskData:
        ids = {n: _tasks.single_token(model, " " + n) for n in NAMES}
        names = [n for n, token in ids.items() if token is not None]
        nouns = [n for n in NOUNS if _tasks.single_token(model, " " + n) is not None]
        if len(names) < N_DRAWN or len(nouns) < 7:
            raise CircuitxError(
                f"docstring needs {N_DRAWN} single-token parameter names and 7 single-token "
                f"nouns; this tokenizer keeps {len(names)} and {len(nouns)}"
            )
        rng = random.Random(seed)
        clean, corrupted, documented, wrongs = [], [], [], []
        for _ in range(n_prompts):
            drawn = rng.sample(names, N_DRAWN)
            method, prefix, (a, b, c) = drawn[0], drawn[1:3], drawn[3:6]
            suffix, fresh = drawn[6:7], drawn[7:]
            words = rng.sample(nouns, 7)
            clean_def, clean_doc = [*prefix, a, b, c, *suffix], [a, b]
            clean.append(prompt_text(method, clean_def, clean_doc, words))
            def_args, doc_args = self._corrupt(clean_def, clean_doc, fresh)
            corrupted.append(prompt_text(method, def_args, doc_args, words))
            documented.append([ids[a], ids[b], ids[c]])
            wrongs.append([ids[n] for n in drawn[1:] if n != c])

        clean_tokens, corrupted_tokens, lengths = _tasks.encode_pairs(
            model, self.name, clean, corrupted
        )
        keys = ("A_def", "B_def", "C_def", "A_doc", "B_doc", "END")
        positions = _tasks.position_table(keys, n_prompts)
        for i in range(n_prompts):
            row = clean_tokens[i, : lengths[i]]
            a_at, b_at, c_at = (_tasks.occurrences(row, token) for token in documented[i])
            if [len(a_at), len(b_at), len(c_at)] != [2, 2, 1]:
                raise CircuitxError(
                    f"docstring prompt does not tokenise as the task needs: {clean[i]!r}"
                )
            positions["A_def"][i], positions["A_doc"][i] = a_at
            positions["B_def"][i], positions["B_doc"][i] = b_at
            positions["C_def"][i] = c_at[0]
            positions["END"][i] = lengths[i] - 1
        return _tasks.TaskData(
            clean=clean_tokens,
            corrupted=corrupted_tokens,
            positions=positions,
            answer=torch.tensor(documented)[:, 2],
            wrong=torch.tensor(wrongs),
            clean_prompts=clean,
            corrupted_prompts=corrupted,
            lengths=torch.tensor(lengths),
        )

    def _corrupt(
        self, def_args: list[str], doc_args: list[str], fresh: list[str]
    ) -> tuple[list[str], list[str]]:
        """The corrupted prompt's def and docstring parameters (see module docstring)."""
        def_args, doc_args = list(def_args), list(doc_args)
        if self.corruption == "random_random":
            def_args[2:5], doc_args = fresh[0:3], fresh[3:5]
            return def_args, doc_args
        if self.corruption in ("random_def", "random_def_doc"):
            def_args[2:4] = fresh[0:2]
        if self.corruption in ("random_answer", "random_answer_doc"):
            def_args[4] = fresh[2]
        if self.corruption in ("random_doc", "random_def_doc", "random_answer_doc"):
            doc_args = fresh[0:2]  # random_def's names: random_def_doc keeps def = doc
        return def_args, doc_args

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        heads: dict[str, Head] = dict(HEADS)
        if variant == "oneill-bui":
            heads["1.2"] = (1, 0)
        label = f"docstring:{variant}" if variant else "docstring"
        require_shape(label, n_layers, n_heads, has_mlp, heads.values())
        graph = reference_graph(label, n_layers, n_heads, has_mlp)
        graph.graph["task"] = self.name
        nodes = {key: head_node(*head) for key, head in heads.items()}
        nodes.update(input=INPUT, logits=LOGITS)
        put_in_circuit(graph, [nodes[key] for key in heads], "head")
        for sender, receiver, inputs in EDGES:
            mark_edge(graph, nodes[sender], nodes[receiver], inputs)
        return graph


def prompt_text(method: str, def_args: list[str], doc_args: list[str], words: list[str]) -> str:
    params = "".join(
        f"\n    :param {name}: {words[3 + 2 * i]} {words[4 + 2 * i]}"
        for i, name in enumerate(doc_args)
    )
    return (
        f"\ndef {method}(self, {', '.join(def_args)}):\n"
        f'    """{" ".join(words[:3])}\n{params}\n    :param'
    )
