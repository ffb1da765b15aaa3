"""``python -m specnet ...`` (and ``torchrun -m specnet train ...``) runs the CLI."""

from .cli import main

main()
