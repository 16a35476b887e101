"""Likelihood levers, each on its own: error against a tight reference and time, one curve each.

    python benchmarks/likelihood_levers.py --digits CKPT [--mnist CKPT] [--cases mixture,digits,mnist]

A thin entry point: the code is ``scorepde.commands.likelihood_levers``.
"""

from scorepde.commands.likelihood_levers import main

if __name__ == "__main__":
    main()
