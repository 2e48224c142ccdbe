"""``python -m headcount.cli``: the same as the ``headcount`` command."""

from headcount.cli import main

main()
