"""``python -m challenge.cli``: the same as ``plateau``."""

from challenge.cli import main

main()
