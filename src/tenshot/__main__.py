"""``python -m tenshot``: the command line."""

from .cli import main

main()
