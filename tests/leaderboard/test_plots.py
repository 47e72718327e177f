from circuitx.leaderboard.plots import method_styles
from circuitx.methods import METHODS


def test_every_leaderboard_row_has_a_line_of_its_own():
    rows = [*METHODS, "eap[qk-fix=on]", "eap-ig[ig-mode=activations]", "acdc[input-tests=off]"]
    styles = method_styles(rows)
    looks = {(s["color"], s["linestyle"]) for s in styles.values()}
    assert len(rows) > 10 and len(looks) == len(rows)
    assert method_styles(rows[:3]) == {row: styles[row] for row in rows[:3]}
