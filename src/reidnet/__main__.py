"""`python -m reidnet` runs the command-line interface."""

from reidnet.cli import main

main()
