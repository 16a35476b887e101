"""How far a finite difference in t is from the exact ∂t s on the default image U-Nets.

    python benchmarks/time_steps.py [--out DIR] [--dsm-steps N] [--quick]

A thin entry point: the code is ``scorepde.commands.time_steps``.
"""

from scorepde.commands.time_steps import main

if __name__ == "__main__":
    main()
