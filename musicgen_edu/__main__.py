"""``python -m musicgen_edu`` runs the command line."""

from .cli import main

main()
