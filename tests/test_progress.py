import pytest

from circuitx.progress import fixed, progress_bar, silenced


def test_an_announced_bar_is_one_line_on_a_stderr_that_is_not_a_terminal(capsys):
    with progress_bar("training transcoders for m (first use)", 3, announced=True) as advance:
        advance(3)
    with progress_bar("a quiet bar", 3) as advance:
        advance(3)
    with silenced(), progress_bar("silenced", 3, announced=True):
        pass
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["training transcoders for m (first use) ..."]
    assert captured.out == ""


@pytest.mark.parametrize(
    "value, shown",
    [(-3.66e-7, "0.000"), (-0.0, "0.000"), (-0.0004999, "0.000"), (-0.01, "-0.010"),
     (1.5, "1.500"), (float("nan"), "nan"), (float("-inf"), "-inf")],
)  # fmt: skip
def test_a_negative_that_rounds_to_zero_is_shown_as_zero(value, shown):
    assert fixed(value) == shown
