"""Writing a Llama model's weights by hand: :mod:`design`'s features on a modern architecture.

What changes from the GPT-2 design:

- **Rotary positions, no position embedding.** A head's preference for a query-key distance
  is written into the fastest rotary pairs: with query (1, 0) and key (a, b) in pair j (both
  read from the anchor), the score is ``a cos(d theta_j) + b sin(d theta_j)`` at distance
  d. :func:`positional_profile` picks the (a, b) by linear programming: a peak at one
  distance (a previous-token head) or a dip (a head that must not look at itself).
- **Content terms** (feature-by-feature scores) take one pair each among the slowest pairs,
  first dim only, so rotation scales a term by cos(d theta_j) (>= 0.99 over the model's
  positions) and no two terms mix.
- **Grouped-query attention.** The query heads of one key/value group share keys and values:
  each head's terms take their own slots in the group's key and value dims. A distractor
  sharing a group with a circuit head (an *echo*) reads the group's keys and values with
  random queries and writes them, through random output rows, to noise.
- **RMSNorm**: the anchor fixes the RMS as it fixes LayerNorm's scale. **Gated MLPs**:
  a neuron's ``silu(gate) * up`` with the up-projection reading the constant 1 is
  :class:`design.MLPWeights`' ``silu(x @ w_in + b_in)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linprog

from circuitx.builtin.planted.design import ANCHOR, Design, HeadWeights

PROFILE_BOUND = 40.0  # the largest coefficient a positional profile may use


def positional_profile(
    thetas: Sequence[float], n_positions: int, distance: int, margin: float, dip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (a, b) of ``sum_j a_j cos(d theta_j) + b_j sin(d theta_j)`` over distances
    d < ``n_positions`` such that distance ``distance`` scores at least ``margin`` above
    (below with ``dip``) every other, which lie in as narrow a band as the frequencies allow."""
    d = np.arange(n_positions)[:, None]
    basis = np.concatenate([np.cos(d * np.asarray(thetas)), np.sin(d * np.asarray(thetas))], 1)
    n = basis.shape[1]
    rows, bounds_ = [], []
    # variables: the coefficients, the band's floor l and its width w; minimise w
    for other in range(n_positions):
        if other == distance:
            continue
        rows.append(np.concatenate([-basis[other], [1.0, 0.0]]))  # f(other) >= l
        bounds_.append(0.0)
        rows.append(np.concatenate([basis[other], [-1.0, -1.0]]))  # f(other) <= l + w
        bounds_.append(0.0)
        gap = basis[other] - basis[distance] if not dip else basis[distance] - basis[other]
        rows.append(np.concatenate([gap, [0.0, 0.0]]))  # the margin
        bounds_.append(-margin)
    result = linprog(
        np.concatenate([np.zeros(n), [0.0, 1.0]]),
        A_ub=np.array(rows),
        b_ub=np.array(bounds_),
        bounds=[(-PROFILE_BOUND, PROFILE_BOUND)] * n + [(None, None), (0.0, None)],
        method="highs",
    )
    if result.status != 0:
        raise ValueError(f"no rotary profile with margin {margin} at distance {distance}")
    half = len(thetas)
    return result.x[:half], result.x[half : 2 * half]


@dataclass
class RotaryTerm:
    """A score term in rotary pair ``pair``: query and key vectors for its two dims."""

    pair: int
    query: tuple[torch.Tensor, torch.Tensor]
    key: tuple[torch.Tensor, torch.Tensor]


class RotaryDesign(Design):
    """A Llama model under construction (see the module docstring)."""

    learned_positions = False

    def __init__(
        self,
        words: list[str],
        n_layers: int,
        n_heads: int,
        n_kv_heads: int,
        d_model: int,
        n_positions: int,
        seed: int,
        rope_theta: float,
        fast_pairs: int,
    ) -> None:
        super().__init__(words, n_layers, n_heads, d_model, n_positions, seed)
        if n_heads % n_kv_heads:
            raise ValueError(f"{n_heads} heads do not split into {n_kv_heads} groups")
        self.n_kv_heads, self.rope_theta, self.fast_pairs = n_kv_heads, rope_theta, fast_pairs
        self.rotary: dict[tuple[int, int], list[RotaryTerm]] = {}
        self.echoes: set[tuple[int, int]] = set()

    def thetas(self) -> list[float]:
        """Rotary frequencies by pair, as Llama computes them."""
        half = self.d_head // 2
        return [self.rope_theta ** (-j / half) for j in range(half)]

    def group_heads(self, layer: int, head: int) -> list[tuple[int, int]]:
        """The query heads sharing ``head``'s keys and values."""
        size = self.n_heads // self.n_kv_heads
        first = head // size * size
        return [(layer, h) for h in range(first, first + size)]

    # positions
    def positional(
        self, layer: int, head: int, distance: int, margin: float, dip: bool = False
    ) -> None:
        """Score distance ``distance`` ``margin`` above (``dip``: below) every other."""
        thetas = self.thetas()[: self.fast_pairs]
        a, b = positional_profile(thetas, self.n_positions, distance, margin, dip)
        terms = self.rotary.setdefault((layer, head), [])
        zero = torch.zeros(self.width)
        for pair in range(self.fast_pairs):
            key = (self.const(float(a[pair])), self.const(float(b[pair])))
            terms.append(RotaryTerm(pair, (self.const(), zero), key))

    def offset(
        self, layer: int, head: int, back: int, sharpness: float, sink: float | None = None
    ) -> None:
        """Attention peaked ``back`` tokens before the query, ``sharpness`` above the rest."""
        if sink is not None:
            raise ValueError("a rotary offset head has no BOS sink term")
        self.positional(layer, head, back, sharpness)

    def sink(self, layer: int, head: int, weight: float, recency: float = 0.0) -> None:
        if recency:
            raise ValueError("a rotary design has no position feature for recency")
        super().sink(layer, head, weight)

    def _distractor_head(self, layer: int, head: int, sources: Sequence[int], gain: float) -> None:
        """A circuit head's group-mate echoes its keys and values (GQA); other distractors
        get their own random weights."""
        mates = [h for h in self.group_heads(layer, head) if h != (layer, head)]
        if any(h in self.heads or h in self.rotary for h in mates):
            self.echoes.add((layer, head))
            self.heads.setdefault((layer, head), HeadWeights())
            return
        super()._distractor_head(layer, head, sources, gain)

    # saving
    def save(self, directory: Path) -> None:
        """Save as a Hugging Face Llama model directory with its tokenizer."""
        from transformers import LlamaConfig, LlamaForCausalLM

        basis = self._basis()
        read = ANCHOR / math.sqrt(self.d_model)  # undoes RMSNorm's fixed scale
        d_mlp = 4 * self.d_model
        config = LlamaConfig(
            vocab_size=len(self.vocab),
            hidden_size=self.d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_kv_heads,
            head_dim=self.d_head,
            max_position_embeddings=self.n_positions,
            rope_theta=self.rope_theta,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            **self.zero_embedding_setting(basis),
        )
        model = LlamaForCausalLM(config)
        state = {name: torch.zeros_like(p) for name, p in model.state_dict().items()}
        state["model.embed_tokens.weight"] = self.token_embed @ basis.T
        state["lm_head.weight"] = (basis @ self.unembed * read).T
        state["model.norm.weight"] = torch.ones(self.d_model)
        for layer in range(self.n_layers):
            prefix = f"model.layers.{layer}."
            for norm in ("input_layernorm", "post_attention_layernorm"):
                state[prefix + norm + ".weight"] = torch.ones(self.d_model)
            q, k, v, o = self._attention(layer, basis, read)
            for name, weight in zip("qkvo", (q, k, v, o)):
                state[prefix + f"self_attn.{name}_proj.weight"] = weight
            if layer in self.mlps:
                gate, up, down = self._gated_mlp(layer, basis, read, d_mlp)
                for name, weight in (("gate", gate), ("up", up), ("down", down)):
                    state[prefix + f"mlp.{name}_proj.weight"] = weight
        model.load_state_dict(state)
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def _attention(
        self, layer: int, basis: torch.Tensor, read: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v and o projection weights (nn.Linear layout) of one layer."""
        dh, half = self.d_head, self.d_head // 2
        query = torch.zeros(self.n_heads, dh, self.width)
        key = torch.zeros(self.n_kv_heads, dh, self.width)
        value = torch.zeros(self.n_kv_heads, dh, self.width)
        output = torch.zeros(self.n_heads, dh, self.width)
        size = self.n_heads // self.n_kv_heads
        for group in range(self.n_kv_heads):
            heads = [(layer, h) for h in range(group * size, (group + 1) * size)]
            slow = list(range(half - 1, self.fast_pairs - 1, -1))  # content dims
            used_pairs: set[int] = set()
            values = 0
            for name in heads:
                head = name[1]
                weights = self.heads.get(name, HeadWeights())
                for term in self.rotary.get(name, []):
                    if term.pair in used_pairs:
                        raise ValueError(f"rotary pair {term.pair} used twice in {name}'s group")
                    used_pairs.add(term.pair)
                    for dim, q, k in zip((term.pair, term.pair + half), term.query, term.key):
                        query[head, dim], key[group, dim] = q, k
                for q, k in zip(weights.query, weights.key):
                    if not slow:
                        raise ValueError(f"head {name}'s group has no slow rotary pair left")
                    dim = slow.pop(0)
                    query[head, dim], key[group, dim] = q, k
                for read_, written in zip(weights.value, weights.output):
                    if values >= dh:
                        raise ValueError(f"head {name}'s group needs more than {dh} value dims")
                    value[group, values], output[head, values] = read_, written
                    values += 1
            for layer_, head in heads:  # echoes: random queries and outputs over the group's dims
                if (layer_, head) not in self.echoes:
                    continue
                junk, noise = self.group("junk"), self.group("noise")
                for dim in range(dh):
                    if key[group, dim].any():
                        query[head, dim] = self._spread(junk, 4.0)
                for dim in range(values):
                    output[head, dim] = self._spread(noise, 1.0)
        scale = torch.tensor([read * math.sqrt(dh), read, read, 1.0])
        q = (query @ basis.T).reshape(-1, self.d_model) * scale[0]
        k = (key @ basis.T).reshape(-1, self.d_model) * scale[1]
        v = (value @ basis.T).reshape(-1, self.d_model) * scale[2]
        o = (output @ basis.T).reshape(-1, self.d_model).T
        return q, k, v, o

    def _gated_mlp(
        self, layer: int, basis: torch.Tensor, read: float, d_mlp: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """gate, up and down projection weights (nn.Linear layout) of one layer's neurons."""
        mlp = self.mlps[layer]
        w_in, b_in, w_out = torch.cat(mlp.w_in, 1), torch.cat(mlp.b_in), torch.cat(mlp.w_out, 0)
        k = len(b_in)
        if k > d_mlp:
            raise ValueError(f"MLP {layer} needs {k} > {d_mlp} neurons")
        gate, up = torch.zeros(d_mlp, self.width), torch.zeros(d_mlp, self.width)
        down = torch.zeros(self.d_model, d_mlp)
        gate[:k] = w_in.T + b_in[:, None] * self.const()[None, :]
        up[:k] = self.const()[None, :]
        down[:, :k] = (w_out @ basis.T).T
        return (gate @ basis.T) * read, (up @ basis.T) * read, down
