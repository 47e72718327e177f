"""The trained built-ins on inputs they were not trained on: each task's high-level model
drawn with another seed (most of its prompts are new), 4096 of its pairs, scored as
training scores held-out pairs (accuracy, worst IIA, worst strict-IIA, joint).

    python benchmarks/trained_unseen.py [--seed 1]

trained-docstring holds out whole groups in training, so its own held-out scores are
already on unseen inputs; IOI and greater-than hold out pairs of trained prompts.
"""

from __future__ import annotations

import argparse
import json

import torch

from circuitx.builtin import model_dir
from circuitx.builtin.trained import TRAINED
from circuitx.builtin.trained.greater_than_hl import (
    GREATER_THAN_ALIGNMENT,
    GREATER_THAN_PROMPTS,
    GreaterThanHighLevel,
)
from circuitx.builtin.trained.ioi_hl import IOI_ALIGNMENT, IOI_PROMPTS, IOIHighLevel
from circuitx.builtin.trained.siit import Intervenable, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=4096)
    args = parser.parse_args()
    from transformers import GPT2LMHeadModel

    def ioi(target):
        hl = target.hl
        names = target.tokenizer.convert_ids_to_tokens(hl.name_ids.tolist())
        return IOIHighLevel(target.tokenizer, names, IOI_ALIGNMENT, IOI_PROMPTS, args.seed)

    def greater_than(target):
        return GreaterThanHighLevel(
            target.tokenizer, GREATER_THAN_ALIGNMENT, GREATER_THAN_PROMPTS, args.seed
        )

    results = {}
    for name, redraw in (("trained-ioi", ioi), ("trained-greater-than", greater_than)):
        target = TRAINED[name].target(name)
        hl = redraw(target)
        seen = {tuple(row.tolist()) for row in target.hl.inputs}
        new = sum(tuple(row.tolist()) not in seen for row in hl.inputs) / len(hl.inputs)
        pairs = hl.pairs()
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(args.seed))
        model = Intervenable(GPT2LMHeadModel.from_pretrained(model_dir(name)).eval())
        scores = evaluate(model, hl, pairs[order[: args.pairs]]).summary()
        results[name] = {"new_prompts": new, **scores}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
