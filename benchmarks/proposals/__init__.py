"""Prototypes of speed changes to files outside the benchmark owner's files, with their checks and measured
gains; each module says which file it is for and the exact change (see benchmarks/proposals/README.md)."""
