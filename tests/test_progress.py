from circuitx.progress import progress_bar, silenced


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
