"""Task files (issue 25): our JSONL, EAP-IG/MIB CSV and auto-circuit JSON give the task
the same prompts make, bad files end in one line, and the Python API takes pairs."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from conftest import assert_one_line_error, run

from circuitx.builtin import load
from circuitx.errors import CircuitxError
from circuitx.graph import edges_by_name
from circuitx.graph_files import read_graph, write_graph
from circuitx.tasks import FileTask, get_task, task_from_pairs

N = 12


@pytest.fixture(scope="module")
def planted_ioi():
    return load("planted-ioi", device="cpu")


@pytest.fixture(scope="module")
def ioi_data(planted_ioi):
    return get_task("ioi").make_data(planted_ioi, N, seed=0)


def word(model, token) -> str:
    return model.decode([int(token)]).strip()


def write_formats(directory: Path, model, data) -> dict[str, Path]:
    """The IOI prompts as our JSONL, an EAP-IG CSV and an auto-circuit JSON."""
    rows = range(data.n_prompts)
    jsonl = directory / "ioi-pairs.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps(
                {
                    "clean": data.clean_prompts[i],
                    "corrupted": data.corrupted_prompts[i],
                    "answer": word(model, data.answer[i]),
                    "wrong": word(model, data.wrong[i]),
                }
            )
            + "\n"
            for i in rows
        )
    )
    table = directory / "ioi-pairs.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clean", "corrupted", "correct_idx", "incorrect_idx", "template"])
        for i in rows:
            writer.writerow(
                [
                    data.clean_prompts[i],
                    data.corrupted_prompts[i],
                    int(data.answer[i]),
                    int(data.wrong[i]),
                    "ioi",
                ]
            )
    auto = directory / "ioi-pairs.json"
    prompts = [
        {
            "clean": data.clean_prompts[i],
            "corrupt": data.corrupted_prompts[i],
            "answers": [" " + word(model, data.answer[i])],
            "wrong_answers": [" " + word(model, data.wrong[i])],
        }
        for i in rows
    ]
    auto.write_text(json.dumps({"prompts": prompts}))
    # auto-circuit's pre-tokenised form: token ids, BOS written in half the rows
    (directory / "ids").mkdir()
    tokenised = directory / "ids" / "ioi-pairs.json"
    end = data.positions["END"]
    prompts = [
        {
            "clean": data.clean[i, i % 2 : end[i] + 1].tolist(),
            "corrupt": data.corrupted[i, i % 2 : end[i] + 1].tolist(),
            "answers": [int(data.answer[i])],
            "wrong_answers": [int(data.wrong[i])],
        }
        for i in rows
    ]
    tokenised.write_text(json.dumps({"prompts": prompts}))
    jsonl_ids = directory / "ids" / "ioi-pairs.jsonl"  # ours with token ids, no BOS
    jsonl_ids.write_text(
        "".join(
            json.dumps(
                {
                    "clean_ids": row["clean"][1 - i % 2 :],
                    "corrupted_ids": row["corrupt"][1 - i % 2 :],
                    "answer_ids": row["answers"],
                    "wrong_ids": row["wrong_answers"],
                }
            )
            + "\n"
            for i, row in enumerate(prompts)
        )
    )
    return {
        "jsonl": jsonl,
        "eap-ig": table,
        "auto-circuit": auto,
        "auto-circuit-ids": tokenised,
        "jsonl-ids": jsonl_ids,
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory, planted_ioi, ioi_data):
    return write_formats(tmp_path_factory.mktemp("tasks"), planted_ioi, ioi_data)


@pytest.mark.parametrize(
    "kind", ["jsonl", "eap-ig", "auto-circuit", "auto-circuit-ids", "jsonl-ids"]
)
def test_each_format_gives_the_tasks_own_prompts_and_metric(planted_ioi, ioi_data, files, kind):
    task = get_task(str(files[kind]))
    assert task.name == "ioi-pairs" and len(task.digest) == 64
    data = task.make_data(planted_ioi, N, seed=0)
    for name in ("clean", "corrupted", "answer"):
        assert torch.equal(getattr(data, name), getattr(ioi_data, name)), name
    assert data.clean_prompts == ioi_data.clean_prompts  # token ids shown decoded
    assert torch.equal(data.wrong.squeeze(-1), ioi_data.wrong)
    assert torch.equal(data.positions["END"], ioi_data.positions["END"])
    final = torch.randn(N, planted_ioi.d_vocab, generator=torch.Generator().manual_seed(0))
    ioi = get_task("ioi")
    for metric in ("logit-diff", "kl"):
        assert torch.allclose(
            task.metric(metric, final, data, final), ioi.metric(metric, final, ioi_data, final)
        )
    assert torch.equal(task.correct(final, data), ioi.correct(final, ioi_data))


def test_the_format_is_told_by_content_as_json_dump_and_jsonl_writers_save(
    planted_ioi, files, tmp_path
):
    """A helper's trial: auto-circuit's document on one line (json.dump's default) under
    an unknown suffix was read as JSONL ("line 1 has no 'answer'"), and JSON Lines named
    .json was "not JSON"."""
    one_line = tmp_path / "pairs.data"
    one_line.write_text(json.dumps(json.loads(files["auto-circuit"].read_text())))
    expected = get_task(str(files["auto-circuit"])).make_data(planted_ioi, N, seed=0)
    data = get_task(str(one_line)).make_data(planted_ioi, N, seed=0)
    assert torch.equal(data.clean, expected.clean) and torch.equal(data.answer, expected.answer)
    misnamed = tmp_path / "pairs.json"
    misnamed.write_bytes(files["jsonl"].read_bytes())
    with pytest.raises(CircuitxError, match="pairs.json is JSON Lines .* --task-format jsonl"):
        get_task(str(misnamed))
    assert get_task(str(misnamed), task_format="jsonl").make_data(planted_ioi, N, 0) is not None
    with pytest.raises(CircuitxError, match=r"--task-format jsonl, or none \(its name says"):
        get_task(str(files["jsonl"]), task_format="auto-circuit")  # named .jsonl already


def test_a_file_named_as_a_built_in_task_keeps_its_suffix(files, tmp_path):
    """ioi.jsonl is not the built-in ioi: a graph found on it must not be scored against
    ioi's reference by name."""
    named = tmp_path / "ioi.jsonl"
    named.write_bytes(files["jsonl"].read_bytes())
    assert get_task(str(named)).name == "ioi.jsonl"
    assert get_task(str(files["jsonl"])).name == "ioi-pairs"


def test_a_byte_order_mark_is_read_past(planted_ioi, files, tmp_path):
    """A CSV saved with a UTF-8 byte-order mark (as spreadsheets write it) reads as the
    same file without one."""
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + files["eap-ig"].read_bytes())
    with_mark = get_task(str(marked)).make_data(planted_ioi, N, seed=0)
    without = get_task(str(files["eap-ig"])).make_data(planted_ioi, N, seed=0)
    assert torch.equal(with_mark.clean, without.clean)
    assert torch.equal(with_mark.answer, without.answer)


def test_n_prompts_and_seed_sample_the_file_in_its_order(planted_ioi, files):
    task = get_task(str(files["jsonl"]))
    every = task.make_data(planted_ioi, 100, seed=0)
    assert every.n_prompts == N
    some = task.make_data(planted_ioi, 5, seed=3)
    again = task.make_data(planted_ioi, 5, seed=3)
    other = task.make_data(planted_ioi, 5, seed=4)
    assert torch.equal(some.clean, again.clean) and not torch.equal(some.clean, other.clean)
    rows = [every.clean_prompts.index(p) for p in some.clean_prompts]
    assert rows == sorted(rows)


def test_several_answers_and_the_other_metrics(planted_ioi, ioi_data):
    """Two answers: logit-diff takes the better, prob-diff and log-prob the answers'
    probability together (a repeated answer counts once)."""
    first, second = word(planted_ioi, ioi_data.answer[0]), word(planted_ioi, ioi_data.wrong[1])
    task = task_from_pairs(
        ioi_data.clean_prompts[:2],
        ioi_data.corrupted_prompts[:2],
        [[first, second, first], first],
        [word(planted_ioi, ioi_data.wrong[0]), word(planted_ioi, ioi_data.wrong[1])],
    )
    data = task.make_data(planted_ioi, 2, seed=0)
    final = torch.randn(2, planted_ioi.d_vocab, generator=torch.Generator().manual_seed(1))
    a, b, w = int(ioi_data.answer[0]), int(ioi_data.wrong[1]), int(ioi_data.wrong[0])
    logit_diff = task.metric("logit-diff", final, data, final)
    assert torch.isclose(logit_diff[0], torch.maximum(final[0, a], final[0, b]) - final[0, w])
    probs = final.softmax(-1)
    prob_diff = task.metric("prob-diff", final, data, final)
    assert torch.isclose(prob_diff[0], probs[0, a] + probs[0, b] - probs[0, w])
    log_prob = task.metric("log-prob", final, data, final)
    assert torch.isclose(log_prob[0], (probs[0, a] + probs[0, b]).log())
    assert torch.isclose(log_prob[1], probs[1, a].log())


def test_without_wrong_answers_only_log_prob_and_kl(planted_ioi, ioi_data):
    task = task_from_pairs(
        ioi_data.clean_prompts[:3],
        ioi_data.corrupted_prompts[:3],
        [word(planted_ioi, t) for t in ioi_data.answer[:3]],
    )
    assert task.metrics == ("log-prob", "kl") and task.default_metric == "log-prob"
    with pytest.raises(Exception, match="no metric 'logit-diff'"):
        task.check_metric("logit-diff")


@pytest.mark.slow
def test_discover_on_each_file_gives_the_scores_of_the_built_in_task(files, tmp_path):
    """EAP-IG on the planted IOI model: the task file's graph scores as --task ioi's on
    the same prompts, and finds the planted circuit (node AUC 1)."""
    common = ["--model", "planted-ioi", "--method", "eap-ig", "--n-prompts", N, "--json"]
    common += ["--reference", "planted-ioi", "--faithfulness-prompts", N]
    built_in = run("discover", "--task", "ioi", *common, "--out", tmp_path / "ioi.json")
    assert built_in.exit_code == 0, built_in.output
    expected = json.loads(built_in.stdout)
    graphs = {}
    for kind, path in files.items():
        result = run("discover", "--task", path, *common, "--out", tmp_path / f"{kind}.json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["task"] == "ioi-pairs"
        meta = read_graph(tmp_path / f"{kind}.json").graph
        assert meta["task_file_sha256"] == get_task(str(path)).digest
        assert meta["task_file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert summary["task_file_sha256"] == meta["task_file_sha256"]  # --json says it too
        assert summary["metrics"]["node_auc"] == pytest.approx(1.0)
        for key in ("node_auc", "edge_auc", "node_precision", "node_recall"):
            assert summary["metrics"][key] == pytest.approx(expected["metrics"][key], abs=1e-6)
        assert summary["faithfulness"] == pytest.approx(expected["faithfulness"], abs=1e-5)
        graphs[kind] = edge_scores(tmp_path / f"{kind}.json")
    want = edge_scores(tmp_path / "ioi.json")
    for kind, got in graphs.items():
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in want) < 1e-5, kind


def edge_scores(path: Path) -> dict[str, float]:
    return {name: data["score"] for name, data in edges_by_name(read_graph(path)).items()}


def test_the_files_content_goes_into_the_cell_key(files, tmp_path):
    from circuitx.discovery.request import DiscoveryRequest

    copy = tmp_path / "ioi-pairs.jsonl"
    copy.write_text(files["jsonl"].read_text())
    first = DiscoveryRequest(str(copy), "eap", model="planted-ioi").config()
    copy.write_text(copy.read_text().replace("gave", "handed", 1))
    second = DiscoveryRequest(str(copy), "eap", model="planted-ioi").config()
    assert first["task_file"] != second["task_file"]
    built_in = DiscoveryRequest("ioi", "eap", model="planted-ioi").config()
    assert "task_file" not in built_in and "task_format" not in built_in


BAD = {
    "missing column": (
        "t.csv",
        b"clean,correct_idx\nWhen David and John went,5\n",
        "no column 'corrupted'",
    ),
    "empty file": ("t.jsonl", b"\n\n", "t.jsonl is empty: it has no prompt pairs"),
    "empty JSON file": ("t.json", b"", "t.json is empty: it has no prompt pairs"),
    "empty CSV file": ("t.csv", b" \n", "t.csv is empty: it has no prompt pairs"),
    "position name ending in a newline": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David", "wrong": "John", "positions": {"S1\\n": 3}}\n',
        "position name 'S1\\n' must be letters, digits, _ and +",
    ),
    "a named position that is not a whole number": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David", "wrong": "John", "positions": {"S2": 3.5}}\n',
        "t.jsonl line 1: position S2 3.5 is not a token index",
    ),
    "two-token answer": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David David", "wrong": "John"}\n',
        "t.jsonl line 1: answer 'David David' is 2 tokens",
    ),
    "not UTF-8": ("t.jsonl", b'{"clean": "caf\xe9"}\n', "is not UTF-8 text (byte 0xe9"),
    "JSON that is not a task": ("t.json", b'{"rows": []}', "is JSON but not a task"),
    "our JSONL's rows as one JSON list": (
        "t.json",
        b'[{"clean": "When John", "corrupted": "When Mary", "answer": " went"}]',
        "rows of circuitx's JSONL go one a line in a .jsonl file",
    ),
    "auto-circuit's prompt with our JSONL's key": (  # a trial's: no "did you mean"
        "t.json",
        b'{"prompts": [{"clean": "When John", "corrupted": "When Mary", "answers": [" went"], '
        b'"wrong_answers": [" ran"]}]}',
        "t.json prompt 1: key 'corrupted' is not read; did you mean 'corrupt'?",
    ),
    "auto-circuit's answers per position (its tracr datasets)": (
        "t.json",
        b'{"prompts": [{"clean": [3, 0, 1], "corrupt": [3, 1, 1], "answers": [[1, 0]], '
        b'"wrong_answers": [[1, 1]]}]}',
        "t.json prompt 1: 'answers' holds a list of tokens per position",
    ),
    "auto-circuit's vectors (its micro-model inputs)": (
        "t.json",
        b'{"prompts": [{"clean": [[3.0, 3.0], [2.0, 2.0]], "corrupt": [[-3.0, -3.0], '
        b'[-2.0, -2.0]], "answers": [1], "wrong_answers": [0]}]}',
        "t.json prompt 1: clean [[3.0, 3.0], [2.0, 2.0]] is not a token id or a list of them",
    ),
    "token ids and text in one pair": (
        "t.json",
        b'{"prompts": [{"clean": [1, 2], "corrupt": "When", "answers": [4], '
        b'"wrong_answers": [5]}]}',
        "t.json prompt 1: one prompt is token ids and the other not",
    ),
    "token-id prompts with text answers": (
        "t.json",
        b'{"prompts": [{"clean": [1, 2], "corrupt": [1, 3], "answers": ["John"], '
        b'"wrong_answers": [5]}]}',
        "t.json prompt 1: the prompts are token ids, so 'answers' must be token ids too",
    ),
    "a prompt longer than the model's context": (
        "t.json",
        b'{"prompts": [{"clean": [1, 2], "corrupt": [1, 3], "answers": [4], '
        b'"wrong_answers": [5]}, {"clean": ['
        + b"1, " * 400
        + b'2], "corrupt": ['
        + b"1, " * 400
        + b'3], "answers": [4], "wrong_answers": [5]}]}',
        "t.json prompt 2: the clean prompt is 402 tokens long with BOS; the model's context is",
    ),
    "a prompt's token id out of range": (
        "t.json",
        b'{"prompts": [{"clean": [1, 2], "corrupt": [1, 99999], "answers": [4], '
        b'"wrong_answers": [5]}]}',
        "t.json prompt 1: the corrupted prompt's token id 99999 is outside the model's",
    ),
    "token-id prompts with a text answer": (
        "t.jsonl",
        b'{"clean_ids": [1, 2], "corrupted_ids": [1, 3], "answer": "John"}\n',
        "t.jsonl line 1: a pair with token-id prompts takes token ids throughout",
    ),
    "the same token ids twice": (
        "t.json",
        b'{"prompts": [{"clean": [1, 2], "corrupt": [1, 2], "answers": [4], '
        b'"wrong_answers": [5]}]}',
        "t.json prompt 1: the clean and corrupted prompts are the same",
    ),
    "an unquoted comma": (
        "t.csv",
        b"clean,corrupted,correct_idx,incorrect_idx\n"
        b"When David and John went to the store, John gave,When David and Robert went,3,4\n",
        "t.csv row 2 has 5 fields and the header 4: quote a prompt that holds a comma",
    ),
    "a column twice": (
        "t.csv",
        b"clean,corrupted,clean,correct_idx\nWhen John,When Mary,When Paul,3\n",
        "t.csv has the column 'clean' twice",
    ),
    "index out of range": (
        "t.csv",
        b"clean,corrupted,correct_idx,incorrect_idx\n"
        b"When David and John went to the store,When David and Robert went to the store,99999,3\n",
        "t.csv row 2: answer id 99999 is outside the model's vocabulary",
    ),
    "an answer that is also wrong": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": ["David", "John"], "wrong": "John"}\n',
        "t.jsonl line 1: 'John' is both an answer and a wrong answer",
    ),
    "no file": (None, b"", "task file not found"),
    "an answer as text and as ids": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David", "answer_ids": [5], "wrong": "John"}\n',
        "t.jsonl line 1 gives both 'answer' and 'answer_ids': give one",
    ),
    "a word the model does not know": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "Bartholomew", "wrong": "John"}\n',
        "t.jsonl line 1: 'Bartholomew' not in the model's vocabulary (its tokenizer reads it as",
    ),
    "a word the model does not know, before a comma": (  # a helper's trial: 'stor,' named
        "t.jsonl",
        b'{"clean": "When David and John went to the stor, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David", "wrong": "John"}\n',
        "t.jsonl line 1: 'stor' not in the model's vocabulary (its tokenizer reads it as",
    ),
    "a huge word the model does not know": (  # a helper's trial: a 200 KB line of error
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "' + b"Z" * 100_000 + b'", "wrong": "John"}\n',
        "t.jsonl line 1: '" + "Z" * 56 + "... not in the model's vocabulary (its tokenizer",
    ),
    "an empty list of answers": (  # a helper's trial: "must be a word or a list of words"
        "t.json",
        b'{"prompts": [{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupt": "When David and John went to the store, Robert gave a drink to", '
        b'"answers": [], "wrong_answers": ["John"]}]}',
        "t.json prompt 1: 'answers' is an empty list: give at least one word",
    ),
    "a CSV row short of fields": (  # a helper's trial: "correct_idx None is not a token id"
        "t.csv",
        b"clean,corrupted,correct_idx,incorrect_idx\n"
        b"When David and John went to the store,When David and Robert went to the store\n",
        "t.csv row 2 has 2 fields and the header 4",
    ),
    "a CSV header with a space": (  # a trial's: "its columns: clean,  corrupted" hid it
        "t.csv",
        b"clean, corrupted,correct_idx\nWhen David,When Robert,3\n",
        "t.csv has no column 'corrupted' (its columns: 'clean', ' corrupted', 'correct_idx')",
    ),
    "auto-circuit's JSON over several lines named .jsonl": (  # a trial's: no hint
        "t.jsonl",
        b'{\n  "prompts": [\n    {"clean": "When David", "corrupt": "When Robert",\n'
        b'     "answers": [" John"], "wrong_answers": [" Robert"]}\n  ]\n}\n',
        "t.jsonl line 1 is not JSON; the file reads as auto-circuit's JSON",
    ),
    "auto-circuit's JSON on one line named .jsonl": (  # a trial's: "has no 'answer'"
        "t.jsonl",
        b'{"prompts": [{"clean": "When David", "corrupt": "When Robert", '
        b'"answers": [" John"], "wrong_answers": [" Robert"]}]}\n',
        "t.jsonl line 1 holds 'prompts', not a prompt pair; the file reads as auto-circuit's",
    ),
    "a key given twice": (  # a helper's trial: json kept the last answer, unsaid
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the store, Robert gave a drink to", '
        b'"answer": "David", "wrong": "John", "answer": "Robert"}\n',
        "t.jsonl line 1 gives 'answer' twice",
    ),
    "a pair of two lengths": (
        "t.jsonl",
        b'{"clean": "When David and John went to the store, John gave a drink to", '
        b'"corrupted": "When David and John went to the long store, Robert gave a drink to", '
        b'"answer": "David", "wrong": "John"}\n',
        "t.jsonl line 1: the clean prompt is 14 tokens and the corrupted one 15",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_task_files_are_one_line_errors(tmp_path, case):
    name, content, message = BAD[case]
    path = tmp_path / "missing.jsonl"
    if name is not None:
        path = tmp_path / name
        path.write_bytes(content)
    result = run("discover", "--task", path, "--model", "planted-ioi", "--method", "eap")
    assert_one_line_error(result, message)


def test_json_read_as_eap_igs_csv_is_named_so_in_a_short_line(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"prompts": [{"clean": "x" * 5000, "corrupt": "y"}]}))
    with pytest.raises(CircuitxError, match="pairs.json is JSON, not EAP-IG's CSV") as caught:
        get_task(str(path), task_format="eap-ig")
    assert len(str(caught.value)) < 200
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join("c" * 100 + str(i) for i in range(30)) + "\n")
    with pytest.raises(CircuitxError, match="no column 'clean'") as caught:
        get_task(str(wide), task_format="eap-ig")
    assert len(str(caught.value)) < 600


def test_an_unknown_task_name_is_one_line(tmp_path):
    result = run("discover", "--task", "iio", "--model", "planted-ioi", "--method", "eap")
    assert_one_line_error(result, "unknown task 'iio'; choose from ioi")


def test_the_worked_example_in_the_docs_runs(tmp_path, monkeypatch):
    """docs/task-files.md: its script writes 20 pairs, its command finds the planted
    circuit from them."""
    text = (Path(__file__).parents[2] / "docs" / "task-files.md").read_text()
    script = text.split("python - <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    command = text.split("circuitx discover --task my-ioi.jsonl", 1)[1].split("```", 1)[0]
    args = ["--task", "my-ioi.jsonl", *shlex.split(command.replace("\\\n", " "))]
    monkeypatch.chdir(tmp_path)
    exec(compile(script, "task-files.md", "exec"), {})
    lines = (tmp_path / "my-ioi.jsonl").read_text().splitlines()
    assert len(set(lines)) == len(lines) == 20  # a trial found its 20 lines held 8 pairs
    result = run("discover", *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metrics"]["node_auc"] == pytest.approx(1.0)
    # what the page says of it: 17 of the 25 planted edges, faithfulness about -0.29
    assert summary["metrics"]["edge_recall"] == pytest.approx(17 / 25)
    assert summary["faithfulness"] == pytest.approx(-0.29, abs=0.01)
    assert summary["repeated_prompts"] == 0
    assert (tmp_path / "my-ioi.graphml").is_file()
    export = text.split("```bash\ncircuitx export ", 1)[1].split("\n", 1)[0]
    result = run("export", *shlex.split(export))
    assert result.exit_code == 0, result.output
    mib = read_graph(tmp_path / "my-ioi-mib.json")
    assert edges_by_name(mib) == edges_by_name(read_graph(tmp_path / "my-ioi.graphml"))
    python = text.split("## From Python\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    names: dict = {}
    exec(compile(python, "task-files.md", "exec"), names)
    assert names["graph"].graph["task"] == "four-pairs"
    assert names["graph"].graph["n_prompts"] == 4
    assert names["graph"].graph["repeated_prompts"] == 0
    assert names["graph"].graph["faithfulness"] == pytest.approx(-0.29, abs=0.01)


def test_repeated_pairs_of_a_task_file_are_counted_and_warned_of(tmp_path):
    """A trial's: five pairs written twice ran as "10 prompt pairs" without a word."""
    lines = [
        json.dumps({"clean": f"When {a} and {b} went to the store, {b} gave a drink to",
                    "corrupted": "When Daniel and Michael went to the store, Jessica gave a drink to",
                    "answer": a, "wrong": b})
        for a, b in [("John", "David"), ("David", "Robert"), ("Robert", "Sarah")]
    ]  # fmt: skip
    path = tmp_path / "twice.jsonl"
    path.write_text("\n".join(lines + lines[:2]) + "\n")
    args = ["--task", path, "--model", "planted-ioi", "--method", "activation-patching"]
    result = run("discover", *args, "--reference", "planted-ioi", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["n_prompts"], summary["repeated_prompts"]) == (5, 2)
    assert "2 of the task's 5 prompt pairs repeat an earlier one" in result.stderr
    assert "the run has 3 distinct pairs" in result.stderr


def test_a_task_file_on_the_leaderboard(files, tmp_path):
    """--tasks takes a task file: its cell is scored against the planted model's own
    circuit, keyed by the file's content."""
    out = tmp_path / "board"
    args = ["leaderboard", "--tasks", files["jsonl"], "--methods", "eap", "--model"]
    result = run(*args, "planted-ioi", "--seeds", 1, "--n-prompts", N, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == 1 and rows[0]["task"] == "ioi-pairs"
    assert rows[0]["node_auc"]["mean"] == pytest.approx(1.0)
    again = run(*args, "planted-ioi", "--seeds", 1, "--n-prompts", N, "--out", out, "--json")
    assert json.loads(again.stdout)["resumed"] == 1
    # a name with a space, an accent and '#': the report's links reach its files
    odd = tmp_path / "tâche #1.jsonl"
    odd.write_bytes(files["jsonl"].read_bytes())
    args[2] = odd
    assert run(*args, "planted-ioi", "--seeds", 1, "--n-prompts", N, "--out", out).exit_code == 0
    page = (out / "index.html").read_text()
    linked = re.findall(r'(?:src|href)="([^"]+\.(?:png|html))"', page)
    assert any("t%C3%A2che_1" in link for link in linked), linked  # a space, '#': '_'
    assert all((out / unquote(html.unescape(link))).is_file() for link in linked), linked


def test_a_task_files_reference_on_the_leaderboard(files, tmp_path):
    """--reference TASK=FILE scores that task's cells against the user's graph (here the
    planted circuit's complement: the AUC falls below 0.5); an edited reference makes a
    new cell; a task not on the board is one line."""
    task = str(files["jsonl"])
    made = tmp_path / "circuit.json"
    discover = ["discover", "--task", task, "--model", "planted-ioi", "--method", "eap"]
    assert run(*discover, "--n-prompts", N, "--out", made).exit_code == 0
    reference = read_graph(made)
    for node, data in reference.nodes(data=True):
        if node not in ("input", "logits"):
            data["in_circuit"] = not data["in_circuit"]
    write_graph(reference, tmp_path / "complement.json")
    out = tmp_path / "board"
    args = ["leaderboard", "--tasks", task, "--methods", "eap", "--model", "planted-ioi"]
    args += ["--seeds", 1, "--n-prompts", N, "--out", out, "--json"]
    spec = f"{task}={tmp_path / 'complement.json'}"
    result = run(*args, "--reference", spec)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"][0]["node_auc"]["mean"] < 0.5
    write_graph(read_graph(made), tmp_path / "complement.json")  # edited: the circuit itself
    again = json.loads(run(*args, "--reference", spec).stdout)
    assert again["resumed"] == 0 and again["rows"][0]["node_auc"]["mean"] > 0.5
    bad = run(*args, "--reference", f"ioi={tmp_path / 'complement.json'}")
    assert_one_line_error(bad, "--reference 'ioi=")


@pytest.mark.parametrize("mixes", [(None,), ((0, 0.2), (0, 0.6), (0, 1.0))], ids=["eap", "eap-ig"])
def test_pairs_of_different_lengths_give_what_each_length_gives_alone(planted_ioi, ioi_data, mixes):
    """The file's pairs are of several token lengths (padded on the right to the longest):
    the edge gradients over all of them are the prompt-weighted mean of those of each
    length group run alone, unpadded."""
    from circuitx.engine import Engine

    lengths = (ioi_data.positions["END"] + 1).tolist()
    groups = {length: [i for i, n in enumerate(lengths) if n == length] for length in lengths}
    assert len(groups) > 1 and min(lengths) < ioi_data.clean.shape[1]

    def pairs(rows):
        return task_from_pairs(
            [ioi_data.clean_prompts[i] for i in rows],
            [ioi_data.corrupted_prompts[i] for i in rows],
            [word(planted_ioi, ioi_data.answer[i]) for i in rows],
            [word(planted_ioi, ioi_data.wrong[i]) for i in rows],
        )

    def gradients(task, n):
        data = task.make_data(planted_ioi, n, seed=0)
        return Engine(planted_ioi, task, data).mask_gradients(mixes)[1], data

    together, data = gradients(pairs(range(N)), N)
    assert data.clean.shape[1] == max(lengths)
    alone = torch.zeros_like(together)
    for length, rows in groups.items():
        part, part_data = gradients(pairs(rows), len(rows))
        assert part_data.clean.shape[1] == length  # no padding
        alone += part * len(rows) / N
    size = float(together.abs().max())
    assert size > 0 and torch.allclose(together, alone, atol=1e-5 * size)


def test_a_position_column_reads_the_metric_at_that_token(planted_ioi, tmp_path):
    """``position`` (a token of the clean prompt, negative from its end): the metric is
    read there, and a text answer continues the prompt up to it."""
    clean = "When David and John went to the store, John gave a drink to"
    corrupted = "When Robert and Sarah went to the store, James gave a drink to"
    rows = [
        {"clean": clean, "corrupted": corrupted, "answer": "David", "wrong": "John"},
        {
            "clean": clean,
            "corrupted": corrupted,
            "answer": "David",
            "wrong": "John",
            "position": -1,
        },
        {
            "clean": clean,
            "corrupted": corrupted,
            "answer": "John",
            "wrong": "Robert",
            "position": 2,
        },
    ]
    path = tmp_path / "positions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = get_task(str(path)).make_data(planted_ioi, 3, seed=0)
    bos = 0 if planted_ioi.bos_token_id is None else 1
    last = len(planted_ioi.encode(clean)) - 1
    assert data.positions["END"].tolist() == [bos + last, bos + last, bos + 2]
    assert data.answer.tolist() == [planted_ioi.encode(w)[0] for w in ("David", "David", "John")]
    rows[2]["position"] = 99
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run("discover", "--task", path, "--model", "planted-ioi", "--method", "eap")
    assert_one_line_error(result, "line 3: position 99 is outside the clean prompt's 14 tokens")
    rows[2]["position"] = True  # a new user's trial: the error said "position True"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run("discover", "--task", path, "--model", "planted-ioi", "--method", "eap")
    assert_one_line_error(result, "line 3: position true is not a token index")


def test_a_directory_is_not_a_task_file(tmp_path):
    with pytest.raises(CircuitxError, match="is a directory, not a task file"):
        FileTask.from_file(str(tmp_path))
    with pytest.raises(CircuitxError, match="is a directory, not a task name or task file"):
        get_task(str(tmp_path))  # "unknown task" before
    with pytest.raises(CircuitxError, match="/dev/null is not a regular file, so not a task"):
        FileTask.from_file("/dev/null")


def test_every_row_is_checked_whichever_pairs_the_seed_draws(planted_ioi, files, tmp_path):
    """A row the tokenizer breaks (a 2-token answer) is refused at every seed, not only
    at those whose sample holds it."""
    rows = files["jsonl"].read_text().splitlines()
    broken = json.loads(rows[-1]) | {"answer": "David David"}
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([*rows[:-1], json.dumps(broken)]) + "\n")
    task = FileTask.from_file(str(path))
    for seed in range(4):  # 3 of 12 rows: most samples miss the last one
        with pytest.raises(CircuitxError, match=f"line {N}: answer 'David David' is 2 tokens"):
            task.make_data(planted_ioi, 3, seed)
    good = FileTask.from_file(str(files["jsonl"]))
    assert good.make_data(planted_ioi, 3, 0).n_prompts == 3


def test_a_pair_whose_prompts_are_the_same_is_refused(tmp_path):
    clean = "When David and John went to the store, John gave a drink to"
    with pytest.raises(CircuitxError, match="pair 2: the clean and corrupted prompts are the"):
        task_from_pairs([clean, clean], [clean.replace("John", "Robert"), clean], ["David"] * 2)


@pytest.mark.parametrize(
    ("key", "meant"), [("wrong_answers", "wrong"), ("answers", "answer"), ("positon", "position")]
)
def test_a_misnamed_key_is_refused_and_other_keys_are_ignored(tmp_path, key, meant):
    row = {"clean": "When David and John went", "corrupted": "When David and Robert went"}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row | {"answer": "to", key: "x"}) + "\n")
    if meant != "answer":
        with pytest.raises(
            CircuitxError, match=f"line 1: key '{key}' is not read; did you mean '{meant}'"
        ):
            FileTask.from_file(str(path))
    else:  # 'answer' is there: 'answers' is the user's own field
        assert FileTask.from_file(str(path)).pairs[0].answers == ("to",)
    path.write_text(json.dumps(row | {"answers": "to", "template": "abc"}) + "\n")
    with pytest.raises(
        CircuitxError, match="line 1: key 'answers' is not read; did you mean 'answer'"
    ):
        FileTask.from_file(str(path))
    path.write_text(json.dumps(row | {"answer": "to", "template": "abc", "id": 3}) + "\n")
    assert FileTask.from_file(str(path)).pairs[0].answers == ("to",)


def test_an_answer_merging_with_the_prompt_is_named_so(tiny_dir):
    model = load(str(tiny_dir), device="cpu")
    clean = "When David and John went to the store, John gave a drink to "  # ends in a space
    task = task_from_pairs([clean], [clean.replace("John", "Mark", 2)], ["David"], ["John"])
    with pytest.raises(CircuitxError, match="answer 'David' merges with the clean prompt's last"):
        task.make_data(model, 1, 0)
    with pytest.raises(CircuitxError, match=r"the prompt ends in a space, .*: leave it out\)$"):
        task.make_data(model, 1, 0)


def test_a_circuit_graph_given_as_the_task_is_named_so(tmp_path):
    """A graph file passed to --task (GraphML, ours or EAP-IG's JSON) is named as a graph,
    not read as a task file with no 'clean' column."""
    graph = tmp_path / "g.graphml"
    write_graph(get_task("ioi").reference("planted", 12, 12, True), graph)
    eap_ig = tmp_path / "e.json"
    eap_ig.write_text(json.dumps({"cfg": {}, "nodes": {"a0.h0": True}, "edges": {}}))
    ours = tmp_path / "g.json"
    ours.write_text(json.dumps({"format": "circuitx-graph", "nodes": []}))
    cases = ((graph, "is XML"), (eap_ig, "is a circuit graph"), (ours, "is a circuit graph"))
    for path, kind in cases:
        with pytest.raises(CircuitxError, match=f"{path.name} {kind}.*not a task file"):
            FileTask.from_file(str(path))


def test_eap_igs_greater_than_csv_is_the_greater_than_task(tmp_path):
    """EAP-IG's greater_than_data.csv (clean, corrupted, label: the start year's YY)
    gives the built-in task's tokens and its prob-diff (the years above YY against the
    rest), the file's default metric."""
    model = load("planted-greater-than", device="cpu")
    builtin = get_task("greater-than")
    data = builtin.make_data(model, N, seed=0)
    path = tmp_path / "greater_than_data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clean", "corrupted", "label"])
        for i in range(N):
            writer.writerow(
                [data.clean_prompts[i], data.corrupted_prompts[i], int(data.extra["yy"][i])]
            )
    task = get_task(str(path))
    assert task.default_metric == "prob-diff"
    ours = task.make_data(model, N, seed=0)
    assert torch.equal(ours.clean, data.clean) and torch.equal(ours.corrupted, data.corrupted)
    final = torch.randn(N, model.d_vocab, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(
        task.metric("prob-diff", final, ours, final),
        builtin.metric("prob-diff", final, data, final),
    )
    path.write_text(
        "clean,corrupted,label\nThe war lasted from the year 1799 to the year 17,x,99\n"
    )
    with pytest.raises(CircuitxError, match="row 2: label '99' is not a year's last two digits"):
        get_task(str(path))


def test_score_finds_the_planted_models_truth_for_a_task_files_graph(files, tmp_path):
    """A graph found on a task file's prompts names no built-in task; on a planted model
    --reference auto (score's default, as discover's) is the model's own circuit."""
    graph = tmp_path / "g.json"
    common = ["--model", "planted-ioi", "--method", "eap", "--n-prompts", 4]
    found = run("discover", "--task", files["jsonl-ids"], *common, "--out", graph)
    assert found.exit_code == 0, found.output
    scored = run("score", graph)
    assert scored.exit_code == 0, scored.output
    assert "planted-ioi ground truth" in scored.stdout


def test_an_auto_circuit_file_takes_position_as_the_others_do(planted_ioi, files, tmp_path):
    """position and positions, circuitx's extension of EAP-IG's CSV and our JSONL, are
    read in an auto-circuit file too (they were ignored)."""
    data = json.loads(files["auto-circuit-ids"].read_text())
    for prompt in data["prompts"]:
        prompt["position"] = 2
        prompt["positions"] = {"S1": 3}
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(data))
    got = get_task(str(moved)).make_data(planted_ioi, N, seed=0)
    assert got.positions["END"].tolist() == [3] * N  # BOS, then token 2
    assert got.positions["S1"].tolist() == [4] * N


def test_an_answer_split_inside_a_character_shows_its_ids(tiny_dir, tmp_path):
    """A helper's trial: 'ñ' was "2 tokens (' �', '�')", pieces of its bytes."""
    row = {"clean": "When John and Mary went", "corrupted": "When John and Anne went"}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({**row, "answer": " ñ", "wrong": " x"}) + "\n")
    result = run("discover", "--task", path, "--model", tiny_dir, "--method", "eap")
    assert_one_line_error(result, "t.jsonl line 1: answer ' ñ' is 2 tokens for this model (id ")
    assert "\ufffd" not in result.stderr


def test_a_whole_float_token_id_is_read_as_pandas_writes_it():
    """A trial's: 4692.0, which pandas writes for an int column with a gap (and EAP-IG's
    pandas loader reads back), was refused; 3.5 still is."""
    from circuitx.tasks.pairs import read_pairs

    text = "clean,corrupted,correct_idx,incorrect_idx\nWhen A,When B,4692.0,\n"
    (pair,) = read_pairs(text, "eap-ig", "t.csv").pairs
    assert pair.answer_ids == (4692,) and pair.wrong_ids == ()
    with pytest.raises(CircuitxError, match="correct_idx 3.5 is not a token id"):
        read_pairs(text.replace("4692.0", "3.5"), "eap-ig", "t.csv")


def test_years_in_correct_idx_are_warned_of(tiny_dir, tmp_path):
    """A trial's: MIB's greater-than CSV (YY in correct_idx) ran silently on GPT-2's
    tokenizer, 32 read as the token 'A'; a file of ordinary ids says nothing."""
    said = "The {} lasted from the year {}{} to the year {}"
    rows = [(said.format(what, cc, yy, cc), said.format(what, cc, "01", cc), yy)
            for what, cc, yy in (("war", 17, 32), ("deal", 18, 45))]  # fmt: skip
    path = tmp_path / "gt.csv"
    path.write_text("clean,corrupted,correct_idx\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    out = tmp_path / "g.graphml"
    args = ["--model", tiny_dir, "--method", "eap", "--no-faithfulness", "--json", "--out", out]
    result = run("discover", "--task", path, *args)
    assert result.exit_code == 0, result.output
    said = [w for w in json.loads(result.stdout)["warnings"] if "under 100" in w]
    assert said and "name that column label" in said[0]
    assert read_graph(out).graph["task_warnings"] == said  # kept with the graph
    path.write_text(path.read_text().replace(",32\n", ",4692\n"))
    quiet = run("discover", "--task", path, *args[:-2])
    assert not [w for w in json.loads(quiet.stdout)["warnings"] if "under 100" in w]


def test_a_label_of_years_beside_correct_idx_is_noted(tmp_path):
    """A CSV with correct_idx and a label of years reads correct_idx (it read silently);
    it says the label's greater-than reading was passed over. Another label is quiet."""
    head = "clean,corrupted,correct_idx,label\n"
    rows = "The war lasted from 1732 to 17,The war lasted from 1701 to 17,2091,32\n"
    path = tmp_path / "gt.csv"
    path.write_text(head + rows)
    task = FileTask.from_file(str(path))
    assert task.pairs[0].answer_ids == (2091,) and task.metrics[0] == "log-prob"
    (said,) = task.warnings()
    assert "both correct_idx and a label column of years (YY)" in said
    path.write_text(head + rows.replace(",32\n", ",5\n"))  # 05 as pandas writes it
    assert len(FileTask.from_file(str(path)).warnings()) == 1
    path.write_text(head + rows.replace(",32\n", ",war\n"))
    assert FileTask.from_file(str(path)).warnings() == []
