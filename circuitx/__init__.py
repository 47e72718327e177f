"""circuitx: automated circuit discovery in transformer language models."""

__version__ = "0.1.0"
