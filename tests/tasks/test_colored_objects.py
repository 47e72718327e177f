"""Colored-objects data with the real GPT-2 tokenizer (from ../shared), metric and reference."""

import re

import pytest
import torch

from circuitx.errors import CircuitxError
from circuitx.tasks import get_task
from circuitx.tasks.colored_objects import COLORS, OBJECTS

task = get_task("colored-objects")
ITEMS = r"an? (\w+) (\w+), an? (\w+) (\w+), and an? (\w+) (\w+)"
QUESTION = rf"Q: On the (?:table|desk|floor), (?:there is|you see|I see) {ITEMS}\. What color is the (\w+)\?\nA:"
PROMPT = re.compile(rf"{QUESTION} (\w+)\n{QUESTION}")


@pytest.fixture(scope="module")
def data(tiny_model):
    return task.make_data(tiny_model, 40, seed=5)


def parse(prompt):
    match = PROMPT.fullmatch(prompt)
    assert match, prompt
    groups = match.groups()
    shot = dict(zip(groups[1:7:2], groups[0:7:2])), groups[6], groups[7]
    query = dict(zip(groups[9:15:2], groups[8:15:2])), groups[14]
    return shot, query


def test_colours_and_objects_are_single_gpt2_tokens(tiny_model):
    for word in [*COLORS, *(c.capitalize() for c in COLORS), *OBJECTS]:
        assert len(tiny_model.encode(" " + word)) == 1, word


def test_prompts_are_one_shot_and_positions_are_right(tiny_model, data):
    decode = lambda i, key: tiny_model.decode([int(data.clean[i, data.positions[key][i]])])
    for i, prompt in enumerate(data.clean_prompts):
        (shot_scene, shot_asked, shot_answer), (scene, asked) = parse(prompt)
        assert shot_answer == shot_scene[shot_asked].capitalize()
        assert not set(shot_scene) & set(scene) and not set(shot_scene.values()) & set(
            scene.values()
        )
        assert decode(i, "OBJECT") == decode(i, "QUERY") == " " + asked
        assert decode(i, "COLOR") == " " + scene[asked]
        assert tiny_model.decode([int(data.answer[i])]) == " " + scene[asked].capitalize()
        assert decode(i, "END") == ":" and int(data.positions["END"][i]) == data.clean.shape[1] - 1
        for word in re.findall(r"\ban? (\w+)", prompt):  # "an" exactly before vowel colours
            assert word in COLORS


def test_corrupted_prompt_asks_about_another_object_of_the_scene(tiny_model, data):
    for i, prompt in enumerate(data.corrupted_prompts):
        (_, _, _), (scene, other) = parse(prompt)
        (_, _, _), (_, asked) = parse(data.clean_prompts[i])
        assert other in scene and other != asked
        changed = (data.clean[i] != data.corrupted[i]).nonzero().flatten().tolist()
        assert changed == [int(data.positions["QUERY"][i])]
        assert tiny_model.decode([int(data.wrong[i])]) == " " + scene[other].capitalize()


def test_metric_and_correct(tiny_model, data):
    final = tiny_model.run(data.clean, positions=data.positions["END"])
    got = task.metric("logit-diff", final, data, final)
    i = 3
    assert float(got[i]) == pytest.approx(float(final[i, data.answer[i]] - final[i, data.wrong[i]]))
    fake = torch.zeros_like(final)
    rows = torch.arange(data.n_prompts)
    fake[rows, data.answer] = 2.0
    assert task.correct(fake, data).all()
    other = data.extra["colors"][(data.extra["colors"] != data.answer[0]).nonzero()[0]]
    fake[0, other] = 3.0  # another colour (not necessarily the corrupted answer) wins
    assert task.correct(fake, data).tolist() == [False] + [True] * (data.n_prompts - 1)


def test_reference_is_relational():
    assert task.reference_task == "ioi"
    with pytest.raises(CircuitxError, match="relational"):
        task.reference("", 24, 16, True)


def test_word_level_tokenizer(word_model):
    data = task.make_data(word_model, 6, seed=0)
    assert (data.positions["COLOR"] + 1 == data.positions["OBJECT"]).all()


def test_tokenizer_that_splits_colours_is_rejected(tiny_model, monkeypatch):
    encode = type(tiny_model).encode
    split = lambda self, text: [1, 2] if text.strip().lower() in COLORS else encode(self, text)
    monkeypatch.setattr(type(tiny_model), "encode", split)
    with pytest.raises(CircuitxError, match="0 colours"):
        task.make_data(tiny_model, 2, seed=0)
