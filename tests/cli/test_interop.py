"""Graphs in and out in EAP-IG's (MIB's) format, through the command line (issue 25)."""

import json

import pytest
from conftest import run

from circuitx.graph import edges_by_name, read_graph


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    path = tmp_path_factory.mktemp("interop") / "eap.json"
    result = run(
        "discover", "--task", "ioi", "--model", "planted-ioi", "--method", "eap",
        "--n-prompts", 8, "--faithfulness-prompts", 8, "--out", path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return path


def test_export_eap_ig_loads_back_equal_and_scores_alike(discovered, tmp_path):
    mib = tmp_path / "mib.json"
    result = run("export", discovered, "--format", "eap-ig", "--out", mib)
    assert result.exit_code == 0, result.output
    data = json.loads(mib.read_text())
    assert set(data) >= {"cfg", "nodes", "edges"}
    ours, theirs = read_graph(discovered), read_graph(mib)
    assert edges_by_name(theirs) == edges_by_name(ours)
    assert dict(theirs.nodes(data=True)) == dict(ours.nodes(data=True))
    scored = [
        json.loads(run("score", path, "--reference", "planted-ioi", "--json").stdout)
        for path in (discovered, mib)
    ]
    assert scored[0]["metrics"] == scored[1]["metrics"]
    assert scored[0]["metrics"]["node_auc"] == pytest.approx(1.0)


def test_export_eap_ig_to_stdout_and_a_refused_suffix(discovered, tmp_path):
    result = run("export", discovered, "--format", "eap-ig")
    assert result.exit_code == 0 and json.loads(result.stdout)["cfg"]["n_layers"] == 5
    bad = run("export", discovered, "--format", "eap-ig", "--out", tmp_path / "x.graphml")
    assert bad.exit_code != 0 and "names a graphml file, but --format is eap-ig" in bad.stderr
