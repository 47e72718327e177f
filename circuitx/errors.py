"""The one exception type the CLI turns into a single-line message."""


class CircuitxError(Exception):
    """An error caused by the user's input; its message is shown as one line."""
