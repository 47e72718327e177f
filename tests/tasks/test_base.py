"""Helpers every task shares (tasks/base.py)."""

import re

import pytest
import torch

from circuitx.errors import CircuitxError
from circuitx.tasks import TASKS, get_task, task_from_pairs
from circuitx.tasks.base import beats, best, encode_pairs, pick


def test_encode_pairs_rejects_pairs_of_different_lengths(tiny_model):
    clean, corrupted, lengths = encode_pairs(tiny_model, "t", ["a b", "a"], ["c d", "e"])
    assert clean.shape == corrupted.shape == (2, 3) and lengths == [3, 2]
    with pytest.raises(CircuitxError, match="t clean and corrupted prompts tokenise to different"):
        encode_pairs(tiny_model, "t", ["a b"], ["a b c"])


def test_pick_and_best_take_one_or_many_tokens_per_prompt():
    final = torch.arange(24.0).view(2, 3, 4)  # [copies, n, vocab]
    assert pick(final, torch.tensor([0, 1, 3])).tolist() == [[0, 5, 11], [12, 17, 23]]
    many = torch.tensor([[0, 2], [1, 0], [3, 2]])
    assert pick(final, many).shape == (2, 3, 2)
    assert best(final, many).tolist() == [[2, 5, 11], [14, 17, 23]]


def test_repeated_prompts_count_the_draws_that_repeat_an_earlier_one(tiny_model):
    """Greater-than draws a noun and a year for each prompt, so 600 draws repeat some:
    the count is the prompts less the distinct ones; a prompt differs by its answers too."""
    data = get_task("greater-than").make_data(tiny_model, 600, seed=0)
    distinct = len(set(zip(data.clean_prompts, data.corrupted_prompts)))
    assert data.repeated_prompts() == 600 - distinct > 0
    data.answer[1:] = data.answer[0] + 1 + torch.arange(599)  # every answer now its own
    assert data.repeated_prompts() == 0


def test_a_tie_to_float_rounding_is_no_win():
    """An answer equal to a wrong one to float rounding is not right: a helper's trial saw
    such ties counted as right or wrong by how the prompts were split into parts."""
    logit = torch.tensor([12.0, 12.0, 0.0, -3.0, 0.5])
    rival = torch.tensor([12.0 - 2e-5, 11.9, -2e-6, -3.1, 0.5 - 2e-5])
    assert beats(logit, rival).tolist() == [False, True, False, True, True]
    assert not beats(rival, logit).any()


@pytest.mark.parametrize(
    ("model", "n_prompts", "seed", "message"),
    [
        ("planted-ioi", 4, 0, "make_data takes a loaded model"),
        (None, "5", 0, "n_prompts takes a whole number, not '5'"),
        (None, 0, 0, "n_prompts must be at least 1, not 0"),
        (None, 4, -1, "seed must be at least 0, not -1"),
        (None, 4, 2**32, "seed must be at most 4294967295, not 4294967296"),
        (None, 4, None, "seed takes a whole number, not None"),
        (None, 4, 2.5, "seed takes a whole number, not 2.5"),
        (None, True, 0, "n_prompts takes a whole number, not True"),
    ],
)
def test_make_data_checks_its_arguments_as_discover_does(
    tiny_model, model, n_prompts, seed, message
):
    """From a new user's trial: make_data took a model's name into the tokenizer
    (LookupError), seed -1, None and 2.5 without a word, and a file task's 0 prompts to
    max() of nothing; every task now checks them in one place, as discover does."""
    own = task_from_pairs(["When Mary"], ["When John"], ["Mary"], ["John"])
    for task in (*(get_task(name) for name in TASKS), own):
        with pytest.raises(CircuitxError, match=re.escape(message)):
            task.make_data(model or tiny_model, n_prompts, seed)
