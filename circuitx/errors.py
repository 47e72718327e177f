"""The one exception type the CLI turns into a single-line message."""


class CircuitxError(Exception):
    """An error caused by the user's input; its message is shown as one line."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
