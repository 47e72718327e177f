import os
import stat

import pytest

from circuitx.builtin.cache import build_once
from circuitx.errors import CircuitxError


def test_a_build_into_a_place_it_cannot_write_names_that_place(tmp_path):
    """build_once serves both the cache and a command's --out directory: its message
    names the directory, not 'the cache'."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CircuitxError, match=rf"^cannot write {blocker}: "):
        build_once(blocker / "model", lambda staging: None)


def test_a_build_is_announced_once_and_then_found(tmp_path, capsys):
    def build(staging):
        (staging / "config.json").write_text("{}")

    target = tmp_path / "model"
    for _ in range(2):
        assert build_once(target, build, announcement="building model") == target
    assert capsys.readouterr().err.splitlines() == ["building model"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging left behind


def test_a_built_directory_has_plain_permissions(tmp_path):
    """mkdtemp's staging directory is 0700 and safetensors writes 0600: a model built for
    others to read had neither readable."""

    def build(staging):
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").touch(mode=0o600)

    mask = os.umask(0o022)
    try:
        target = build_once(tmp_path / "model", build)
    finally:
        os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [target, *target.iterdir()]}
    assert modes == {"model": 0o755, "config.json": 0o644, "model.safetensors": 0o644}


def test_a_cache_entry_that_lost_its_marker_is_built_again(tmp_path):
    """A helper's trial: a cached model without its config.json was built again on every
    run, and the move into place failed each time ("Directory not empty"). A user's --out
    directory is never replaced so."""

    def build(staging):
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_text("weights")

    target = build_once(tmp_path / "model", build)
    (target / "config.json").unlink()
    (target / "model.safetensors").write_text("damaged")
    assert build_once(tmp_path / "model", build) == target
    assert (target / "model.safetensors").read_text() == "weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    (target / "config.json").unlink()
    with pytest.raises(CircuitxError, match="was written by another run"):
        build_once(target, build, option="--out")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]


def test_a_damaged_built_in_model_says_how_to_build_it_again(tmp_path):
    """A helper's trial: truncated weights in the cache gave a line naming the directory,
    and no way out."""
    from circuitx.builtin import load, model_dir

    load("planted-ioi", cache_dir=tmp_path)
    weights = model_dir("planted-ioi", tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CircuitxError, match=r"remove \S+ and the next run builds it again\)$"):
        load("planted-ioi", cache_dir=tmp_path)
    with pytest.raises(CircuitxError) as raised:  # a review's: not for a bad device
        load("planted-ioi", device="cuda:3", cache_dir=tmp_path)
    assert "remove" not in str(raised.value)
