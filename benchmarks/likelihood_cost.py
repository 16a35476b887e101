"""The price of a likelihood: scorepde.log_likelihood against a score_sde-style SciPy loop.

    python benchmarks/likelihood_cost.py [--out DIR] [--quick] [--points N] [--repeats R] [--compile]

A thin entry point: the code is ``scorepde.commands.likelihood_cost``.
"""

from scorepde.commands.likelihood_cost import main

if __name__ == "__main__":
    main()
