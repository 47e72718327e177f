"""Writing a GPT-2 model's weights by hand, in named residual-stream features.

The residual stream is laid out as named features (a flag, a position, one direction per
entity, ...). Each feature is a column of an orthonormal basis that is orthogonal to the
all-ones vector, so LayerNorm's centring leaves every feature alone. Every token also
carries a large constant ``anchor`` feature (value ``ANCHOR``), so LayerNorm's division by
the residual norm is the same to within ~1e-4 at every position and on every input; the
weights that read the stream undo that fixed scale. A head is then written as a
bilinear attention score over features (query reads x key reads) and a value map
(feature read -> feature written); an MLP as input rows, biases and output rows.

Attention scores are in logits: a score gap of 10 means e^10 more attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from circuitx.builtin.hf import word_level_tokenizer
from circuitx.models import ZERO_EMBEDDING_KEY

ANCHOR = 1000.0
N_JUNK = 8
N_NOISE = 24


@dataclass
class HeadWeights:
    """One head in feature coordinates: score = sum_i (x_q . query[:, i]) (x_k . key[:, i])."""

    query: list[torch.Tensor] = field(default_factory=list)
    key: list[torch.Tensor] = field(default_factory=list)
    value: list[torch.Tensor] = field(default_factory=list)
    output: list[torch.Tensor] = field(default_factory=list)


@dataclass
class MLPWeights:
    """One MLP's neurons in feature coordinates: out = gelu(x @ w_in + b_in) @ w_out."""

    w_in: list[torch.Tensor] = field(default_factory=list)  # [width, k] blocks
    b_in: list[torch.Tensor] = field(default_factory=list)  # [k]
    w_out: list[torch.Tensor] = field(default_factory=list)  # [k, width]


class Design:
    """A GPT-2 model under construction: features, embeddings, heads and MLPs."""

    learned_positions = True  # position features x and x2 come with the position embedding

    def __init__(
        self,
        words: list[str],
        n_layers: int,
        n_heads: int,
        d_model: int,
        n_positions: int,
        seed: int,
    ) -> None:
        self.tokenizer = word_level_tokenizer(words)
        self.vocab: dict[str, int] = self.tokenizer.get_vocab()
        self.n_layers, self.n_heads, self.d_model = n_layers, n_heads, d_model
        self.d_head = d_model // n_heads
        self.n_positions = n_positions
        self.generator = torch.Generator().manual_seed(seed)
        self.width = d_model - 1  # features live orthogonal to the all-ones direction
        self.features: dict[str, int] = {}
        self.token_embed = torch.zeros(len(self.vocab), self.width)
        self.pos_embed = torch.zeros(n_positions, self.width)
        self.unembed = torch.zeros(self.width, len(self.vocab))
        self.heads: dict[tuple[int, int], HeadWeights] = {}
        self.mlps: dict[int, MLPWeights] = {}
        self.add("anchor")
        self.token_embed[:, self.features["anchor"]] = ANCHOR
        if self.learned_positions:
            self.add("x")  # position / n_positions
            self.add("x2")  # its square (for attention peaked at a relative position)
            x = torch.arange(n_positions) / n_positions
            self.pos_embed[:, self.features["x"]] = x
            self.pos_embed[:, self.features["x2"]] = x**2
        self.add("bos")
        self.token_embed[self.token("<|endoftext|>"), self.features["bos"]] = 1.0
        # every token's own random direction, read only by distractors
        junk = self.add("junk", N_JUNK)
        for token in range(len(self.vocab)):
            self.token_embed[token, junk] = self.random_unit(N_JUNK)
        self.add("noise", N_NOISE)  # written by distractors, read by nothing in a circuit

    # features and vectors
    def add(self, name: str, size: int = 1) -> list[int]:
        """Allocate ``size`` features: ``name`` for one, ``name[i]`` for several."""
        names = [name] if size == 1 else [f"{name}[{i}]" for i in range(size)]
        for each in names:
            if each in self.features:
                raise ValueError(f"feature {each} allocated twice")
            if len(self.features) >= self.width:
                raise ValueError(f"d_model {self.d_model} has no room for feature {each}")
            self.features[each] = len(self.features)
        return [self.features[each] for each in names]

    def vec(self, *terms: tuple[str, float] | str) -> torch.Tensor:
        """A feature vector from ``name`` (weight 1) or ``(name, weight)`` terms."""
        out = torch.zeros(self.width)
        for term in terms:
            name, weight = (term, 1.0) if isinstance(term, str) else term
            out[self.features[name]] += weight
        return out

    def const(self, weight: float = 1.0) -> torch.Tensor:
        """Reads the anchor as the constant ``weight``."""
        return self.vec(("anchor", weight / ANCHOR))

    def group(self, name: str) -> list[int]:
        """Feature indices of a group allocated with ``add(name, size)``."""
        return [i for f, i in self.features.items() if f.startswith(name + "[")]

    def token(self, word: str) -> int:
        return self.vocab[word]

    def random_unit(self, size: int) -> torch.Tensor:
        vector = torch.randn(size, generator=self.generator)
        return vector / vector.norm()

    # heads
    def head(self, layer: int, head: int) -> HeadWeights:
        return self.heads.setdefault((layer, head), HeadWeights())

    def score(self, layer: int, head: int, query: torch.Tensor, key: torch.Tensor) -> None:
        """Add the bilinear score term (x_q . query)(x_k . key)."""
        weights = self.head(layer, head)
        weights.query.append(query)
        weights.key.append(key)

    def match(
        self,
        layer: int,
        head: int,
        query_group: str,
        key_group: str,
        weight: float,
        only: Sequence[int] | None = None,
    ) -> None:
        """Add weight * <query_group, key_group> (over members ``only``, default all):
        identity matching, one score term per member."""
        for q, k in self._pairs(query_group, key_group, only):
            self.score(layer, head, self._unit(q, weight), self._unit(k, 1.0))

    def offset(
        self, layer: int, head: int, back: int, sharpness: float, sink: float | None = None
    ) -> None:
        """Attention peaked at the token ``back`` positions before the query:
        score = -sharpness * (p_q - back - p_k)^2, written as three bilinear terms.
        With ``sink``, BOS scores ``sink`` instead (for heads that may look nowhere)."""
        n = float(self.n_positions)
        c = sharpness
        # (n x_q - back)^2 = n^2 x2_q - 2 n back x_q + back^2
        self.score(
            layer,
            head,
            self.vec(
                ("x2", -c * n * n), ("x", 2 * c * n * back), ("anchor", -c * back**2 / ANCHOR)
            ),
            self.const(),
        )
        self.score(
            layer,
            head,
            self.vec(("x", 2 * c * n * n), ("anchor", -2 * c * n * back / ANCHOR)),
            self.vec("x"),
        )
        self.score(layer, head, self.const(-c * n * n), self.vec("x2"))
        if sink is not None:  # BOS (p_k = 0): cancel -c (p_q - back)^2, then add sink
            query = self.vec(("x2", c * n * n), ("x", -2 * c * n * back))
            self.score(layer, head, query + self.const(c * back**2 + sink), self.vec("bos"))

    def sink(self, layer: int, head: int, weight: float, recency: float = 0.0) -> None:
        """Score ``weight`` (+ recency * query position) on BOS: where a head looks when
        nothing else scores higher."""
        query = self.const(weight)
        if recency:
            query = query + self.vec(("x", recency * self.n_positions))
        self.score(layer, head, query, self.vec("bos"))

    def write(self, layer: int, head: int, read: torch.Tensor, written: torch.Tensor) -> None:
        """Add one value dimension: the head reads ``read`` at the key and writes ``written``."""
        weights = self.head(layer, head)
        weights.value.append(read)
        weights.output.append(written)

    def copy(
        self,
        layer: int,
        head: int,
        source: str,
        target: str,
        gain: float,
        only: Sequence[int] | None = None,
    ) -> None:
        """Value map copying group ``source`` into group ``target`` times ``gain`` (members
        ``only``, default all)."""
        for s, t in self._pairs(source, target, only):
            self.write(layer, head, self._unit(s, 1.0), self._unit(t, gain))

    def _pairs(self, a: str, b: str, only: Sequence[int] | None) -> list[tuple[int, int]]:
        pairs = list(zip(self.group(a), self.group(b)))
        return pairs if only is None else [pairs[i] for i in only]

    def neurons(
        self, layer: int, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor
    ) -> None:
        """Add MLP neurons: gelu(x @ w_in + b_in) @ w_out, w_in [width, k], w_out [k, width]."""
        mlp = self.mlps.setdefault(layer, MLPWeights())
        mlp.w_in.append(w_in)
        mlp.b_in.append(b_in)
        mlp.w_out.append(w_out)

    def add_distractors(self, reads: Sequence[int], gain: float) -> None:
        """Give every head and MLP without weights random weights that read
        the features ``reads`` (plus junk and noise) and write only noise features, which no
        circuit component reads. ``gain`` sets their output norm."""
        junk, noise = self.group("junk"), self.group("noise")
        sources = sorted({*reads, *junk})
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                if (layer, head) not in self.heads:
                    self._distractor_head(layer, head, sources, gain)
            if layer in self.mlps:  # a circuit MLP: its neurons are all the circuit's
                continue
            k = 64
            # inputs scaled so that pre-activations stay O(1) whatever the noise's size
            w_in = torch.stack(
                [self._spread(sources, 3.0) + self._spread(noise, 3.0 / gain) for _ in range(k)], 1
            )
            b_in = torch.randn(k, generator=self.generator)
            w_out = torch.stack([self._spread(noise, gain / 4) for _ in range(k)], 0)
            self.neurons(layer, w_in, b_in, w_out)

    def _distractor_head(self, layer: int, head: int, sources: Sequence[int], gain: float) -> None:
        """Random weights for one head: a previous-token-like or a junk-matching pattern,
        reading ``sources`` and writing noise."""
        junk, noise = self.group("junk"), self.group("noise")
        if (layer + head) % 2 == 0:
            self.offset(layer, head, back=1 + (layer + head) % 3, sharpness=1.5)
        else:
            for _ in range(4):
                self.score(layer, head, self._spread(junk, 4.0), self._spread(junk, 1.0))
        self.sink(layer, head, 2.0)
        for _ in range(6):
            self.write(layer, head, self._spread(sources, 1.0), self._spread(noise, gain))

    def _spread(self, indices: Sequence[int], norm: float) -> torch.Tensor:
        """A random vector of length ``norm`` over the features ``indices``."""
        out = torch.zeros(self.width)
        out[list(indices)] = self.random_unit(len(indices)) * norm
        return out

    def _unit(self, index: int, weight: float) -> torch.Tensor:
        out = torch.zeros(self.width)
        out[index] = weight
        return out

    # saving
    def save(self, directory: Path) -> None:
        """Save as a Hugging Face GPT-2 model directory with its tokenizer."""
        from transformers import GPT2Config, GPT2LMHeadModel

        basis = self._basis()  # [d_model, width]
        read = ANCHOR / math.sqrt(self.d_model)  # undoes LayerNorm's fixed scale
        config = GPT2Config(
            n_layer=self.n_layers,
            n_head=self.n_heads,
            n_embd=self.d_model,
            n_positions=self.n_positions,
            vocab_size=len(self.vocab),
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            tie_word_embeddings=False,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **self.zero_embedding_setting(basis),
        )
        model = GPT2LMHeadModel(config)
        state = {name: torch.zeros_like(p) for name, p in model.state_dict().items()}
        state["transformer.wte.weight"] = self.token_embed @ basis.T
        state["transformer.wpe.weight"] = self.pos_embed @ basis.T
        state["lm_head.weight"] = (basis @ self.unembed * read).T
        for layer in range(self.n_layers):
            prefix = f"transformer.h.{layer}."
            for norm in ("ln_1", "ln_2"):
                state[prefix + norm + ".weight"] = torch.ones(self.d_model)
            state[prefix + "attn.c_attn.weight"] = self._qkv(layer, basis, read)
            state[prefix + "attn.c_proj.weight"] = self._attn_out(layer, basis)
            if layer in self.mlps:
                mlp, d_mlp = self.mlps[layer], 4 * self.d_model
                w_in, b_in = torch.cat(mlp.w_in, 1), torch.cat(mlp.b_in)
                w_out, k = torch.cat(mlp.w_out, 0), len(b_in)
                if k > d_mlp:
                    raise ValueError(f"MLP {layer} needs {k} > {d_mlp} neurons")
                state[prefix + "mlp.c_fc.weight"][:, :k] = basis @ w_in * read
                state[prefix + "mlp.c_fc.bias"][:k] = b_in
                state[prefix + "mlp.c_proj.weight"][:k] = w_out @ basis.T
        state["transformer.ln_f.weight"] = torch.ones(self.d_model)
        missing = [k for k in state if k.endswith((".attn.bias", "masked_bias"))]
        for name in missing:  # causal-mask buffers of older transformers versions
            state[name] = model.state_dict()[name]
        model.load_state_dict(state)
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def zero_embedding_setting(self, basis: torch.Tensor) -> dict[str, list[float]]:
        """The config entry that makes zero ablation of the embeddings leave the anchor:
        without it every LayerNorm would divide by its epsilon alone, the weights that undo
        the anchor's scale would blow the stream up some 10^5 times, and attention would be
        decided by rounding (scores that change with the batch's size)."""
        anchor = basis[:, self.features["anchor"]] * ANCHOR
        return {ZERO_EMBEDDING_KEY: anchor.tolist()}

    def _basis(self) -> torch.Tensor:
        """Orthonormal columns spanning the complement of the all-ones vector (seeded)."""
        generator = torch.Generator().manual_seed(1234)
        raw = torch.randn(self.d_model, self.d_model, generator=generator, dtype=torch.float64)
        raw[:, 0] = 1.0
        q, _ = torch.linalg.qr(raw)
        return q[:, 1:].float()

    def _qkv(self, layer: int, basis: torch.Tensor, read: float) -> torch.Tensor:
        dh = self.d_head
        blocks = [torch.zeros(self.d_model, self.d_model) for _ in range(3)]
        for head in range(self.n_heads):
            weights = self.heads.get((layer, head), HeadWeights())
            cols = slice(head * dh, (head + 1) * dh)
            for block, vectors, scale in (
                (0, weights.query, read * math.sqrt(dh)),
                (1, weights.key, read),
                (2, weights.value, read),
            ):
                if len(vectors) > dh:
                    raise ValueError(f"head {layer}.{head} needs {len(vectors)} > {dh} dims")
                if vectors:
                    stacked = torch.stack(vectors, 1)  # [width, r]
                    blocks[block][:, cols][:, : stacked.shape[1]] = basis @ stacked * scale
        return torch.cat(blocks, 1)

    def _attn_out(self, layer: int, basis: torch.Tensor) -> torch.Tensor:
        dh = self.d_head
        out = torch.zeros(self.d_model, self.d_model)
        for head in range(self.n_heads):
            weights = self.heads.get((layer, head), HeadWeights())
            if weights.output:
                stacked = torch.stack(weights.output, 0)  # [r, width]
                out[head * dh : head * dh + stacked.shape[0]] = stacked @ basis.T
        return out


@dataclass
class Circuit:
    """A planted circuit: nodes with their roles, and edges (sender, receiver, head inputs)."""

    roles: dict[str, str] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)  # nodes whose own effect is ~0 by design

    def node(self, node: str, role: str) -> str:
        self.roles[node] = role
        return node

    def edge(self, sender: str, receiver: str, inputs: str = "") -> None:
        """``inputs`` names the receiving head's inputs ("qk", "v", ...); "" for MLPs/logits."""
        self.edges.append((sender, receiver, inputs))

    def readers(
        self, heads: Sequence[tuple[str, str]], reads: Sequence[tuple[str, str]], target: str
    ) -> None:
        """Heads ``(node, role)`` that each read ``(sender, inputs)`` and write to ``target``."""
        for node, role in heads:
            self.node(node, role)
            for sender, inputs in reads:
                self.edge(sender, node, inputs)
            self.edge(node, target)

    def backup(self, node: str, watches: Sequence[str]) -> None:
        """``node`` is a backup head whose query reads the main heads' output (``watches``);
        its own patching effect is ~0 by design."""
        for sender in watches:
            self.edge(sender, node, "q")
        self.backups.append(node)
