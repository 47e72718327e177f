"""Allow ``python -m circuitx``."""

from circuitx.cli import main

if __name__ == "__main__":
    main()
