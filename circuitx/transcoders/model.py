"""A transcoder's weights and forward pass, and the hooks that read a model's MLPs or put
transcoders in their place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from circuitx.models import Model, mlp_normalized_input_hook, mlp_output_hook

PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")


input_hook = mlp_normalized_input_hook  # where a layer's transcoder reads


@dataclass
class Transcoder:
    """One layer's transcoder: encoder [d_in, n_features], decoder [n_features, d_out]."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor  # subtracted from the input before encoding [d_in]
    b_dec_out: torch.Tensor  # added to the output [d_out]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., n_features] of normalised MLP inputs x [..., d_in]."""
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.W_dec + self.b_dec_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().cpu().contiguous() for name in PARAMETERS}

    def to(self, device: torch.device, dtype: torch.dtype) -> Transcoder:
        moved = {name: getattr(self, name).to(device, dtype) for name in PARAMETERS}
        return Transcoder(**moved, config=dict(self.config))


Transcoders = dict[int, Transcoder]  # layer -> transcoder


def mlp_activations(
    model: Model, tokens: torch.Tensor, layers: Sequence[int], real: torch.Tensor | None = None
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the MLP's normalised input and its output at the real tokens:
    ([N, d_model], [N, d_model])."""
    names = [name for layer in layers for name in (input_hook(layer), mlp_output_hook(layer))]
    first = torch.zeros(len(tokens), dtype=torch.long)  # unembed one position, not all of them
    _, cache = model.run_with_cache(tokens, names, first)
    keep = torch.ones(tokens.shape, dtype=torch.bool) if real is None else real
    keep = keep.to(model.device)
    return {
        layer: (cache[input_hook(layer)][keep], cache[mlp_output_hook(layer)][keep])
        for layer in layers
    }


def replacement_hooks(transcoders: Transcoders) -> list[tuple[str, Callable]]:
    """Hooks that replace each MLP's output by its transcoder's reconstruction."""
    hooks: list[tuple[str, Callable]] = []
    for layer, transcoder in transcoders.items():
        seen: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, seen: dict = seen) -> None:
            seen["x"] = x

        def write(out: torch.Tensor, seen: dict = seen, transcoder: Transcoder = transcoder):
            return transcoder(seen["x"].to(transcoder.W_enc.dtype)).to(out.dtype)

        hooks += [(input_hook(layer), read), (mlp_output_hook(layer), write)]
    return hooks
