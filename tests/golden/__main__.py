"""`python -m tests.golden --regen` (from the repository root): rewrite the golden result records."""

from __future__ import annotations

import argparse
import sys

from . import regenerate


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
    ap.add_argument("--regen", action="store_true", help="evaluate every golden case and rewrite tests/golden/*.json")
    args = ap.parse_args()
    if not args.regen:  # never rewrite by accident: the flag is the whole point
        ap.error("nothing to do without --regen")
    n = regenerate()
    print(f"{n} golden cases written; review the diff before committing", file=sys.stderr)


if __name__ == "__main__":
    main()
