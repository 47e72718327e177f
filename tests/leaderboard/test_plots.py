from matplotlib.axes import Axes

from circuitx.leaderboard.plots import faithfulness_figure, method_styles, roc_figure
from circuitx.methods import METHODS


def test_every_leaderboard_row_has_a_line_of_its_own():
    rows = [*METHODS, "eap[qk-fix=on]", "eap-ig[ig-mode=activations]", "acdc[input-tests=off]"]
    styles = method_styles(rows)
    looks = {(s["color"], s["linestyle"]) for s in styles.values()}
    assert len(rows) > 10 and len(looks) == len(rows)
    assert method_styles(rows[:3]) == {row: styles[row] for row in rows[:3]}


def test_a_method_looks_the_same_in_every_figure_of_a_leaderboard(tmp_path, monkeypatch):
    """A method without a curve in one figure (a node method's faithfulness) does not
    shift the others' looks there: a trial's ROC drew the transcoder purple, its
    faithfulness plot red."""
    drawn: list[tuple[str, str, str]] = []
    plot = Axes.plot

    def recording(self, *args, **kwargs):
        if "label" in kwargs:
            name = kwargs["label"].split(" (")[0].split(" = ")[0]
            drawn.append((name, kwargs.get("color"), kwargs.get("linestyle")))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    curve = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 1.0, 1.0]}
    point = [{"fraction": f, "faithfulness": f} for f in (0.1, 1.0)]
    styles = method_styles(["sae", "acdc", "eap"])
    roc = {"sae": {"node": [curve]}, "acdc": {"node": [curve], "edge": [curve]}}
    assert roc_figure("t", roc, tmp_path / "roc.png", styles)
    assert faithfulness_figure("t", {"acdc": [point], "eap": [point]}, tmp_path / "f.png", styles)
    looks = {name: {(c, s) for n, c, s in drawn if n == name} for name, _, _ in drawn}
    assert looks["acdc"] == {(styles["acdc"]["color"], styles["acdc"]["linestyle"])}
    assert looks["eap"] == {(styles["eap"]["color"], styles["eap"]["linestyle"])}
    assert looks["acdc"] != looks["eap"] and len(drawn) == 5  # sae node, acdc x3, eap


def test_curves_that_coincide_are_each_seen_and_named(tmp_path, monkeypatch):
    """A helper's trial: three methods' ROC curves lay on one another, and the plot showed
    one line for a legend of three."""
    drawn: list[tuple[str, float]] = []
    plot = Axes.plot

    def recording(self, *args, **kwargs):
        if "label" in kwargs:
            drawn.append((kwargs["label"], kwargs["linewidth"]))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    same = {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 1.0, 1.0]}
    other = {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}
    roc = {"ap": {"node": [same]}, "eap-ig": {"node": [same]}, "acdc": {"node": [other]}}
    assert roc_figure("t", roc, tmp_path / "roc.png")
    labels, widths = zip(*drawn)
    assert labels == ("ap (0.75)", "eap-ig (0.75) = ap", "acdc (0.50)")
    assert widths[0] > widths[1] > widths[2]  # drawn over it narrower: both show


def test_cprs_curve_is_drawn_where_it_differs(tmp_path, monkeypatch):
    """A trial: the plot showed a curve at 1 beside CPR 0.250, whose curve ranks by signed
    score; it is drawn (x markers, the method's colour) where it is another line."""
    drawn: list[tuple[str, str]] = []
    plot = Axes.plot

    def recording(self, *args, **kwargs):
        if "label" in kwargs:
            drawn.append((kwargs["label"], kwargs.get("marker")))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording)
    by_size = [{"fraction": f, "faithfulness": f} for f in (0.1, 1.0)]
    by_sign = [{"fraction": f, "faithfulness": v} for f, v in ((0.1, 0.0), (1.0, 1.0))]
    curves = {"eap": [by_size], "acdc": [by_size]}
    signed = {"eap": [by_sign], "acdc": [by_size]}  # acdc's scores have one sign
    styles = method_styles(curves)
    assert faithfulness_figure("t", curves, tmp_path / "f.png", styles, signed)
    assert drawn == [("eap", "o"), ("acdc = eap", "o"), ("eap, by signed score (CPR's)", "x")]
