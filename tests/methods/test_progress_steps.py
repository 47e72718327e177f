"""Every method's progress bar ends at its total: ``steps`` counts what ``score`` reports,
so the bar's count and its time left mean what they say."""

from contextlib import contextmanager

import pytest
from conftest import find, random_transcoders

from circuitx import transcoders
from circuitx.discovery import run as discovery_run
from circuitx.methods import METHODS

SETTINGS = {  # kept short; each method's steps still cover every kind it reports
    "edge-pruning": {"options": {"ep_steps": 20}},
    "subnetwork-probing": {"options": {"sp_steps": 20}},
    "sae": {"options": {"sae_steps": 20}},
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_methods_progress_ends_at_its_total(method, tiny_model, monkeypatch, tmp_path):
    settings = SETTINGS.get(method, {})
    if method == "transcoder":
        transcoders.save_transcoders(random_transcoders(tiny_model), tmp_path, "tiny")
        settings = {"options": {"transcoders": str(tmp_path)}}
    bars = []

    @contextmanager
    def counting_bar(description, total, announced=False, start=0, time_left=True):
        done = [0.0]
        bars.append((description, total, done))

        def advance(steps=1, description=None):
            done[0] += steps

        yield advance

    monkeypatch.setattr(discovery_run, "progress_bar", counting_bar)
    # 1M: a part of one prompt each, whose steps are weighted by their share of prompts
    find(tiny_model, "ioi", method, n_prompts=4, faithfulness=False, max_memory=2**20,
         **settings)  # fmt: skip
    ((description, total, done),) = bars
    assert done[0] == pytest.approx(total), description
