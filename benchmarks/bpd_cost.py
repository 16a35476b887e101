"""Bits/dim of a whole test split, and how to cut it into solves: the same answer, which is fastest.

    python benchmarks/bpd_cost.py [--out DIR] [--quick] [--points N] [--repeats R]

A thin entry point: the code is ``scorepde.commands.bpd_cost``.
"""

from scorepde.commands.bpd_cost import main

if __name__ == "__main__":
    main()
