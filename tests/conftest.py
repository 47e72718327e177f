"""Shared fixtures and helpers: tiny GPT-2-architecture models built and saved by the tests
themselves, discovery and command-line helpers.

Tests need the real GPT-2 tokenizer from ../shared/tokenizers/gpt2 (set ``CIRCUITX_SHARED``
when shared/ lives elsewhere). Models load through the loader the CLI uses
(``circuitx.builtin.load``); built-in models are built into a temporary cache.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from circuitx import builtin
from circuitx import transcoders as tc
from circuitx.builtin import BUILTIN_MODELS, built_model_dir, load
from circuitx.builtin.hf import save_gpt2, word_level_tokenizer
from circuitx.cli import main
from circuitx.discovery import DiscoveryRequest, discover
from circuitx.graph import edges_by_name, full_graph, select_nodes
from circuitx.methods import METHODS
from circuitx.models import attention_pattern_hook
from circuitx.tasks import task_vocabulary

SHARED = Path(os.environ.get("CIRCUITX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GPT2_TOKENIZER = SHARED / "tokenizers" / "gpt2"


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker (setup.cfg starts one per core) and the commands it starts
    compute on one thread: two workers of two threads each on two cores ran slower (900 s)
    than one process (705 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Built-in models go to a temporary cache, and the hub is never contacted."""
    os.environ["CIRCUITX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _built_in_models_loaded_once(_isolated_cache):
    """A worker loads each built-in model once for the commands and API calls its tests run
    (booting TransformerLens's bridge took about a second a load, a quarter of the CLI
    tests' time). A load that builds, warns, or fails goes through as it would, and one
    whose files changed since loads them again."""
    real = builtin.load
    loaded = {}

    def load_once(name, device=None, dtype="float32", cache_dir=None):
        usual = name in BUILTIN_MODELS and isinstance(cache_dir, (str, os.PathLike, type(None)))
        directory = built_model_dir(name, cache_dir) if usual else None
        if directory is None or Path(name).is_dir():  # building, its note, or its error
            return real(name, device, dtype, cache_dir)
        files = sorted(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()
        )
        key = (name, device, dtype, directory, tuple(files))
        if key not in loaded or loaded[key].hooked_points():  # a test left a hook on it
            loaded[key] = real(name, device, dtype, cache_dir)
        return loaded[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(builtin, "load", load_once)
    yield
    patch.undo()


# ---------------------------------------------------------------- models


def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    if not (GPT2_TOKENIZER / "vocab.json").is_file():
        pytest.fail(f"the GPT-2 tokenizer is missing: {GPT2_TOKENIZER} (set CIRCUITX_SHARED)")
    return GPT2TokenizerFast(
        vocab=str(GPT2_TOKENIZER / "vocab.json"), merges=str(GPT2_TOKENIZER / "merges.txt")
    )


def tiny_gpt2(
    directory: Path,
    n_layer: int,
    n_head: int,
    d_model: int,
    seed: int = 0,
    edit=None,
    tokenizer: str = "gpt2",
) -> Path:
    """Save a random GPT-2 model (initializer range 0.2) with the real GPT-2 tokenizer, or
    (``tokenizer="words"``) the built-in word-level one; ``edit(model)`` may set weights."""
    tok = gpt2_tokenizer() if tokenizer == "gpt2" else word_level_tokenizer(task_vocabulary())
    save_gpt2(directory, tok, n_layer, n_head, d_model, seed, 0.2, edit)
    return directory


def random_norms(model):
    """``edit`` for :func:`tiny_gpt2`: give every LayerNorm a weight and bias far from 1 and 0, as trained models have."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.5)


def load_tiny(directory: Path, *shape, **settings):
    """:func:`tiny_gpt2` into ``directory``, loaded on the CPU."""
    return load(str(tiny_gpt2(directory, *shape, **settings)), device="cpu")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """2 layers x 4 heads, d_model 32."""
    return tiny_gpt2(tmp_path_factory.mktemp("tiny"), 2, 4, 32)


@pytest.fixture(scope="session")
def dir_12x12(tmp_path_factory) -> Path:
    """12 layers x 12 heads (holds the IOI reference), d_model 48."""
    return tiny_gpt2(tmp_path_factory.mktemp("m12x12"), 12, 12, 48)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load(str(tiny_dir), device="cpu")


@pytest.fixture(scope="session")
def model_12x12(dir_12x12):
    return load(str(dir_12x12), device="cpu")


@pytest.fixture(scope="session")
def word_model(tmp_path_factory):
    """2 layers x 4 heads with the built-in word-level tokenizer (a tokenizer we build)."""
    return load_tiny(tmp_path_factory.mktemp("word"), 2, 4, 32, tokenizer="words")


def random_transcoders(model, seed: int = 0, n_features: int = 16) -> dict:
    """Seeded random transcoders for every MLP of ``model``."""
    generator = torch.Generator().manual_seed(seed)
    d = model.d_model
    return {
        layer: tc.Transcoder(
            W_enc=torch.randn(d, n_features, generator=generator),
            b_enc=torch.randn(n_features, generator=generator) * 0.5,
            W_dec=torch.nn.functional.normalize(
                torch.randn(n_features, d, generator=generator), dim=-1
            ),
            b_dec=torch.randn(d, generator=generator) * 0.1,
            b_dec_out=torch.randn(d, generator=generator) * 0.1,
        )
        for layer in range(model.n_layers)
    }


def random_transcoder_dir(directory: Path, model_name: str = "planted-greater-than") -> str:
    """Seeded random transcoders for every MLP of built-in ``model_name``."""
    model = load(model_name, device="cpu")
    tc.save_transcoders(random_transcoders(model, n_features=32), directory, "planted")
    return str(directory)


# ---------------------------------------------------------------- graphs


def scored_circuit(nodes=("a0.h1", "a1.h2", "m1", "a2.h0"), granularity=None):
    """A 3 x 4 graph with spread signed scores on every node and edge, ``nodes`` selected."""
    graph = full_graph(3, 4, True, task="ioi", method="eap", model="planted-ioi")
    for i, data in enumerate(edges_by_name(graph).values()):
        data["score"] = ((i * 37) % 11 - 5) / 10
    for i, node in enumerate(graph.nodes):
        graph.nodes[node]["score"] = ((i * 7) % 9 - 4) / 4
    select_nodes(graph, nodes)
    if granularity:
        graph.graph["selected_by"] = granularity
    return graph


def drawn_words(path) -> str:
    """The words an SVG shows, in order, one space apart (a wrapped caption's lines
    joined)."""
    texts = [e for e in ET.parse(path).iter() if e.tag.endswith("}text")]
    return " ".join(" ".join("".join(e.itertext()) for e in texts).split())


def every_node_kept(n_layers: int, n_heads: int):
    """A full graph with every node in its circuit and no edge, every score 0.1."""
    graph = full_graph(n_layers, n_heads, True)
    for node in graph.nodes:
        graph.nodes[node].update(score=0.1, in_circuit=True)
    for *_, data in graph.edges(data=True):
        data.update(score=0.1, in_circuit=False)
    return graph


METHOD_GRAPHS = (*METHODS, "transcoder-features")  # the keys of method_graphs
# the learned masks' and the SAE's training, shortened where a test needs their graph, not
# its quality
SHORT_TRAINING = {
    "subnetwork-probing": {"sp_steps": 30},
    "edge-pruning": {"ep_steps": 30},
    "sae": {"sae_steps": 30},
}


@pytest.fixture(scope="session")
def method_graphs(tmp_path_factory) -> dict:
    """Each method's graph for greater-than on the planted model (6 prompts, no
    faithfulness curve), by method name; and the transcoder method's feature graph."""
    model = load("planted-greater-than", device="cpu")
    transcoders = random_transcoder_dir(tmp_path_factory.mktemp("transcoders"))
    graphs = {}
    for method in METHODS:
        options = dict(SHORT_TRAINING.get(method, {}))
        options |= {"transcoders": transcoders} if method == "transcoder" else {}
        graphs[method] = find(
            model, "greater-than", method, n_prompts=6, faithfulness=False, options=options
        )
    options = {"transcoders": transcoders, "granularity": "feature"}
    graphs["transcoder-features"] = find(
        model, "greater-than", "transcoder", n_prompts=6, faithfulness=False, options=options
    )
    return graphs


# ---------------------------------------------------------------- system programs

# Debian's chromium, chromium-driver and graphviz: .ci/run installs them and sets
# CIRCUITX_SYSTEM_PROGRAMS=required, which turns a missing one into a failure; elsewhere
# the tests that need one are skipped without it, saying so
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def require_program(found: bool, why: str) -> None:
    """Skip (or, where CI installs the program, fail) a test whose program is missing."""
    if not found:
        if os.environ.get("CIRCUITX_SYSTEM_PROGRAMS") == "required":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def graphviz():
    require_program(shutil.which("dot") is not None, "needs Graphviz (apt-get install graphviz)")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    why = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
    require_program(bool(BROWSER and DRIVER), why)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = BROWSER
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # its temporary files (the singleton's socket, which quit() leaves) go where pytest's go
    scratch = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))}
    driver = webdriver.Chrome(options=options, service=Service(DRIVER, env=scratch))
    driver.set_window_size(1200, 900)
    yield driver
    driver.quit()


def open_page(driver, path) -> list[str]:
    """Load the page; the errors its console reported."""
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(path.as_uri())
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def drawn(driver) -> tuple[int, int]:
    """The node circles (input and logits included) and edge paths the page shows."""
    return tuple(
        driver.execute_script(
            "return [document.querySelectorAll('circle.node').length,"
            " document.querySelectorAll('path.edge').length]"
        )
    )


def selected(driver) -> tuple[int, int]:
    """The nodes and edges the page has selected (it draws at most 2,000 edges of them)."""
    svg = driver.find_element("id", "circuit")
    return int(svg.get_attribute("data-nodes")), int(svg.get_attribute("data-edges"))


# ---------------------------------------------------------------- discovery and the CLI


def find(model, task: str, method: str, **settings):
    """The circuit graph ``method`` finds for ``task`` on ``model`` (``settings``: the other
    fields of a :class:`DiscoveryRequest`)."""
    return discover(model, DiscoveryRequest(task, method, model=model.name, **settings))


runner = CliRunner()


def run(*args):
    """``circuitx ARGS`` in this process."""
    return runner.invoke(main, [str(a) for a in args])


def stderr_lines(text: str) -> list[str]:
    """stderr's lines but a first use's announcements of a build (which test builds a
    model first depends on the order the tests run in)."""
    return [line for line in text.strip().splitlines() if "(first use; " not in line]


def assert_one_line_error(result, pattern):
    assert result.exit_code != 0, result.output
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr


def pattern_of(part, layer, edge_mask=None):
    """The attention pattern of ``layer`` in the clean run (no mask) or under an edge
    mask, as the model computes it."""
    if edge_mask is None:
        hook = attention_pattern_hook(layer)
        return part.model.run_with_cache(part.data.clean, [hook], part.readout)[1][hook]
    seen = {}

    def keep(pattern):
        seen["pattern"] = pattern.detach().float()
        return pattern

    with torch.no_grad():
        part.run(edge_mask=edge_mask, extra_hooks=[(attention_pattern_hook(layer), keep)])
    return seen["pattern"]
