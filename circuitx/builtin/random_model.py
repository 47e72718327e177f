"""``random-12x12``: GPT-2 architecture, 12 layers x 12 heads, seeded random weights, and
a word-level tokenizer over every task's words. It holds the IOI, greater-than and
docstring references, so every command runs offline on it; its scores are a random
model's."""

from __future__ import annotations

from pathlib import Path

from circuitx.builtin.hf import save_gpt2, word_level_tokenizer
from circuitx.tasks import task_vocabulary

NAME = "random-12x12"
DESCRIPTION = (
    "GPT-2 architecture, 12 layers x 12 heads, d_model 96, seeded random weights, "
    "word-level tokenizer over the task vocabularies; holds the IOI, greater-than and "
    "docstring references"
)


def build(directory: Path) -> None:
    save_gpt2(directory, word_level_tokenizer(task_vocabulary()), 12, 12, 96, seed=0)
