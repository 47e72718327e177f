"""The interactive page in a real browser: headless Chromium driven by Selenium (the
``browser`` fixture, see conftest.py)."""

from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import (
    METHOD_GRAPHS,
    drawn,
    drawn_words,
    every_node_kept,
    find,
    open_page,
    scored_circuit,
    selected,
)

from circuitx.builtin import load
from circuitx.drawing import draw
from circuitx.drawing.page import page_data
from circuitx.drawing.places import Picture, scored_selection, silent_edges
from circuitx.graph import INPUT, LOGITS, full_graph, parse_node, select_nodes, selection_by_score
from circuitx.progress import counted


def set_control(driver, element_id: str, value) -> None:
    """Set a control as a user would, firing its event."""
    driver.execute_script(
        "const box = document.getElementById(arguments[0]); box.value = String(arguments[1]);"
        " box.dispatchEvent(new Event(box.type === 'range' ? 'input' : 'change'));",
        element_id,
        value,
    )


def python_counts(graph, **selection) -> tuple[int, int]:
    """Nodes and edges drawn of discovery's selection (not the node-level edges scored 0)."""
    nodes, edges = selection_by_score(graph, **selection)
    return len(nodes), len(edges - silent_edges(graph, edges))


@pytest.mark.parametrize("method", METHOD_GRAPHS)
def test_every_methods_page_loads_and_draws_its_circuit(browser, method_graphs, tmp_path, method):
    graph = method_graphs[method]
    summary = draw(graph, tmp_path / f"{method}.html")
    assert open_page(browser, tmp_path / f"{method}.html") == []
    assert drawn(browser) == (summary["nodes"] + 2, summary["edges"])  # input, logits too
    status = browser.find_element("id", "status").text
    held = len(Picture(graph).silent())  # sae's input->logits, say (as the static caption)
    among = f" ({counted(held, 'edge')} among the nodes scored 0 not drawn)" if held else ""
    nodes, edges = counted(summary["nodes"], "node"), counted(summary["edges"], "edge")
    assert status == f"{nodes}, {edges}{among}"


@pytest.mark.parametrize("granularity", ["edge", "node"])
def test_the_slider_selects_what_python_selects(browser, tmp_path, granularity):
    graph = scored_circuit(granularity=granularity)
    draw(graph, tmp_path / "c.html")
    assert open_page(browser, tmp_path / "c.html") == []
    set_control(browser, "mode", "threshold")
    top = int(browser.find_element("id", "slider").get_attribute("max"))
    ranked = (
        [d for *_, d in graph.edges(data="score")]
        if granularity == "edge"
        else [graph.nodes[n]["score"] for n in graph if n not in ("input", "logits")]
    )
    assert top == len({abs(score) for score in ranked if score}) - 1  # a stop per non-zero |score|
    for position in range(top + 1):
        set_control(browser, "slider", position)
        threshold = float(browser.find_element("id", "value").get_attribute("value"))
        assert drawn(browser) == python_counts(graph, threshold=threshold), position
    set_control(browser, "value", 0.3)  # typed: a threshold between two scores
    assert drawn(browser) == python_counts(graph, threshold=0.3)
    set_control(browser, "mode", "top")
    for k in (0, 1, 7, 30):  # the top k of the non-zero scores, as draw --top k takes them
        set_control(browser, "slider", k)
        nodes, edges = scored_selection(graph, k)
        assert drawn(browser) == (len(nodes), len(edges - silent_edges(graph, edges))), k
    set_control(browser, "mode", "circuit")
    kept = {key for *_, key, kept in graph.edges(keys=True, data="in_circuit") if kept}
    assert drawn(browser) == (6, len(kept - silent_edges(graph, kept)))
    if granularity == "node":  # the fixture's edges scored 0 among the circuit's nodes
        edges, _, nodes = Picture(graph).contents()  # the static picture's
        assert silent_edges(graph, kept) and drawn(browser) == (len(nodes), len(edges))


def test_hover_a_click_the_reference_and_the_download(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    graph = scored_circuit(granularity="edge")
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h2", "a1.h3", "a2.h3"])  # two not in the circuit
    draw(graph, tmp_path / "r.html", reference)
    assert open_page(browser, tmp_path / "r.html") == []
    score = graph.nodes["m1"]["score"]
    node = browser.find_element("css selector", 'circle.node[data-name="m1"]')
    ActionChains(browser).move_to_element(node).perform()
    assert browser.find_element("id", "info").text == f"node m1, score {score:.4g}"
    tooltip = node.find_element("tag name", "title").get_attribute("textContent")
    assert tooltip == f"m1: score {score:.4g}"
    browser.find_element("css selector", 'circle.node[data-name="a1.h2"]').click()
    touching = [
        key for s, r, key, kept in graph.edges(keys=True, data="in_circuit")
        if kept and "a1.h2" in (s, r)
    ]  # fmt: skip
    lit = browser.find_elements("css selector", "path.highlighted")
    assert sorted(line.get_attribute("data-name") for line in lit) == sorted(touching)
    # an edge within one row (into the layer's MLP) curves below it, one whose line would
    # run through nodes bends around them (as Python bends it), others are straight
    shapes = {
        path.get_attribute("data-name"): path.get_attribute("d").split()[3]
        for path in browser.find_elements("css selector", "path.edge")
    }
    data = page_data(Picture(graph, reference))["edges"]
    bent = {name for name, bend in zip(data["name"], data["bend"]) if bend}
    assert shapes.pop("a1.h2->m1") == "Q" and bent & set(shapes)
    assert shapes == {name: "Q" if name in bent else "L" for name in shapes}
    assert "a1.h2" in browser.find_element("id", "info").text
    # a trial's: drawn with a reference, the page opened without it, and never said the
    # precision and recall the static picture's caption gives
    assert browser.find_element("id", "reference").is_selected()
    missed = browser.find_elements("css selector", "circle.missed-node")
    assert sorted(circle.get_attribute("data-name") for circle in missed) == ["a1.h3", "a2.h3"]
    draw(graph, tmp_path / "r.svg", reference)
    numbers = r"; node precision [-\d.]+, recall [-\d.]+, edge precision [-\d.]+, recall [-\d.]+"
    agreement = re.search(numbers, drawn_words(tmp_path / "r.svg"))[0]
    assert browser.find_element("id", "status").text.endswith(agreement)
    saved = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        " URL.createObjectURL = (blob) => { blob.text().then(done); return 'blob:circuit'; };"
        " URL.revokeObjectURL = () => {};"
        " document.getElementById('download').click();"
    )
    svg = ET.fromstring(saved)
    edges = [
        line
        for line in svg.iter("{http://www.w3.org/2000/svg}path")
        if "edge" in line.get("class", "").split()
    ]
    assert len(edges) == drawn(browser)[1] > 0
    # a trial's: the saved SVG was the drawing alone, its colours unexplained when shared
    texts = ["".join(t.itertext()) for t in svg.findall("{http://www.w3.org/2000/svg}text")]
    high = browser.find_element("id", "scale-high").text
    assert texts[-6:-3] == [  # the title, what is selected, the key in its colours
        page_data(Picture(graph))["title"],
        browser.find_element("id", "status").text,
        "edges: both   circuit only   reference only",
    ]
    # a trial's: the scale's bounds ran together, with no colours, and the page's hover
    # and click advice went into the file
    assert texts[-3:] == ["node score", "-" + high.lstrip("+"), high + ";  edge width: |score|"]
    gradient = svg.find(".//{http://www.w3.org/2000/svg}linearGradient")
    stops = [stop.get("stop-color") for stop in gradient]
    assert stops == ["rgb(33,102,172)", "rgb(247,247,247)", "rgb(178,24,43)"]
    assert "Hover" not in saved
    assert int(svg.get("height")) > int(
        browser.find_element("id", "circuit").get_attribute("height")
    )


def test_a_12x12_models_every_edge_selects_the_largest_draw_and_show(browser, tmp_path):
    from matplotlib.image import imread

    graph = full_graph(12, 12, True, task="ioi", method="eap", model="random 12x12")
    graph.graph["selected_by"] = "edge"
    generator = np.random.default_rng(0)
    for _, _, data in graph.edges(data=True):
        data.update(score=float(generator.normal()), in_circuit=False)
    for _, data in graph.nodes(data=True):
        data.update(score=float(generator.normal()), in_circuit=False)
    summary = draw(graph, tmp_path / "all.html", every=True)
    start = time.perf_counter()
    assert open_page(browser, tmp_path / "all.html") == []
    everything = python_counts(graph, threshold=0.0)
    assert selected(browser) == everything == (158, graph.number_of_edges())
    assert drawn(browser) == (158, 2000)  # the largest 2,000: a picture, not a texture
    status = browser.find_element("id", "status").text
    assert status == "156 nodes, 32491 edges (the 2000 largest drawn)"
    assert time.perf_counter() - start < 30  # the page stays usable at this size
    assert summary["note"] == "no component is in the circuit"  # the saved one is empty
    pixels = imread(io.BytesIO(browser.get_screenshot_as_png()))
    assert pixels.shape[0] > 500 and float(np.std(pixels[..., :3])) > 0.05


def test_a_page_over_positions_names_each_panel(browser, tmp_path):
    """Each panel of a circuit over token positions is headed by its position (the
    headers were the first panel's alone, and a 'features' header stood over the rest)."""
    graph = find(load("planted-ioi"), "ioi", "eap", n_prompts=6, positions="named",
                 faithfulness=False)  # fmt: skip
    summary = draw(graph, tmp_path / "p.html")
    assert open_page(browser, tmp_path / "p.html") == []
    ends = sum(
        parse_node(n)[0] in (INPUT, LOGITS) for n, on in graph.nodes(data="in_circuit") if on
    )
    assert drawn(browser) == (summary["nodes"] + ends, summary["edges"])
    headers = browser.execute_script(
        "return [...document.querySelectorAll('#model text')].map((t) => t.textContent)"
    )
    panels = [h for h in headers if h.startswith("heads")]
    assert panels == [f"heads @{g}" for g in ("IO", "S1", "S1+1", "S2", "END", "other")]
    assert headers.count("MLP") == 6 and "features" not in headers
    # the logits above the headers' row, their name inside the page (a trial's sat on a header)
    (top, bottom), header_tops, svg_top = browser.execute_script(
        "const top = (e) => e.getBoundingClientRect().top;"
        " const logits = document.querySelector('circle[data-name=\"logits\"]');"
        " const headers = [...document.querySelectorAll('#model text')].filter((t) =>"
        " t.textContent.startsWith('heads'));"
        " const label = [...document.querySelectorAll('#circuit text')].find((t) =>"
        " t.textContent === 'logits');"
        " return [[top(label), logits.getBoundingClientRect().bottom], headers.map(top),"
        " top(document.getElementById('circuit'))]"
    )
    # a line (11 px) over the logits' name for its role; the page without room gave 1 px
    assert top - svg_top >= 11 and bottom < min(header_tops)
    # a trial's: 2,621 px wide, it opened on empty panels, its circuit off to the right;
    # it now opens at its circuit, the controls in place above
    size = browser.get_window_size()
    browser.set_window_size(900, 800)
    try:
        assert open_page(browser, tmp_path / "p.html") == []
        (left, right, scrolled), nodes = browser.execute_script(
            "const c = document.getElementById('canvas');"
            " const box = c.getBoundingClientRect();"
            " return [[box.left, box.right, c.scrollLeft], [...document.querySelectorAll("
            "'circle.node')].map((n) => n.getBoundingClientRect().left)]"
        )
        assert scrolled > 0 and any(left <= x <= right for x in nodes)
        assert browser.find_element("id", "download").is_displayed()
    finally:
        browser.set_window_size(size["width"], size["height"])


def test_a_page_too_narrow_for_its_roles_names_them_short_with_a_key(browser, tmp_path):
    """A helper's trial: on a 12 x 12 model the roles ran into each other, and labels had
    no background against the edges under them."""
    from circuitx.tasks import get_task

    graph = every_node_kept(12, 12)
    draw(graph, tmp_path / "big.html", get_task("ioi").reference("", 12, 12, True))
    assert open_page(browser, tmp_path / "big.html") == []  # opens against the reference
    assert (
        "roles: BNM backup name mover; DT duplicate token"
        in browser.find_element("id", "legend").text
    )
    lines = [
        [span.get_attribute("textContent") for span in text.find_elements("tag name", "tspan")]
        for text in browser.find_elements("css selector", "#nodes text")
    ]
    assert ["BNM", "a10.h2"] in lines and ["NM", "a9.h9"] in lines  # the role above the name
    halo = browser.find_element("css selector", "#nodes text")
    assert halo.get_attribute("paint-order") == "stroke"


def test_the_key_gives_the_colour_scales_bounds_and_what_edges_mean(browser, tmp_path):
    """A helper's trial: the scale read "negative ... positive", with no numbers, and a
    node-level circuit's page said "edge width: |score|" of edges without scores; a file's
    input, scored with its edges' total, was drawn dark red."""
    graph = scored_circuit(granularity="node")
    for *_, data in graph.edges(data=True):
        data["score"] = None
    graph.nodes["input"]["score"] = 1000.0
    draw(graph, tmp_path / "n.html")
    assert open_page(browser, tmp_path / "n.html") == []
    text = browser.find_element("id", "edge-key").text
    assert text == "edges: those among the selected nodes (unscored)"
    bound = max(abs(graph.nodes[n]["score"]) for n in graph if n not in ("input", "logits"))
    assert browser.find_element("id", "scale-high").text == f"+{bound:g}"
    fill = browser.find_element("css selector", 'circle.node[data-name="input"]')
    assert fill.get_attribute("fill") == "#ffffff"


def test_a_feature_pages_agreement_is_the_static_captions(browser, method_graphs, tmp_path):
    """Features count as their MLP, their edges as the MLP's, in the page as in the
    picture (a trial's: the picture's caption read edge recall 4.60)."""
    from circuitx.builtin import ground_truth

    graph = method_graphs["transcoder-features"]
    reference = ground_truth("planted-greater-than", "greater-than")
    for kind in ("svg", "html"):
        draw(graph, tmp_path / f"f.{kind}", reference)
    assert open_page(browser, tmp_path / "f.html") == []
    numbers = r"; node precision [-\d.]+, recall [-\d.]+, edge precision [-\d.]+, recall [-\d.]+"
    agreement = re.search(numbers, drawn_words(tmp_path / "f.svg"))[0]
    assert browser.find_element("id", "status").text.endswith(agreement)
    dashed = browser.find_elements("css selector", "path.missed-edge")
    missed = [e for e in ET.parse(tmp_path / "f.svg").iter() if "missed-edge" in e.get("id", "")]
    assert len(dashed) == len(missed)
