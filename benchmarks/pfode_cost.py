"""Cost of the PF-ODE likelihood per image: one function evaluation of the default image U-Net.

    python benchmarks/pfode_cost.py [--data-dir ../shared/data/mnist-10k] [--nfe 800] [--repeats 5]

A thin entry point: the code is ``scorepde.commands.pfode_cost``.
"""

from scorepde.commands.pfode_cost import main

if __name__ == "__main__":
    main()
