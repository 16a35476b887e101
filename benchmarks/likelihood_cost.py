"""The price of a likelihood, lever by lever: scorepde.log_likelihood's solver choices against
score_sde's SciPy loop, error against a tight reference and time, with a work-precision figure.

    python benchmarks/likelihood_cost.py --digits CKPT [--mnist CKPT] [--cases mixture,digits,mnist]

A thin entry point: the code is ``scorepde.commands.likelihood_cost``.
"""

from scorepde.commands.likelihood_cost import main

if __name__ == "__main__":
    main()
