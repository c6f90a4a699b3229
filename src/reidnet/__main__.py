"""`python -m reidnet` runs the command-line interface."""

from reidnet.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module: run only when executed
    main()
