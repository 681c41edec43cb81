"""`python -m kvnand.cli`: the `kvnand` command."""

from kvnand.cli import main

main()
