"""Allow ``python -m circuitx``."""

from circuitx.start import main

if __name__ == "__main__":
    main()
