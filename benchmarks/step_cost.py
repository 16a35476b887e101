"""The price of the FP regularizer: time and peak memory per optimizer step, against DSM.

    python benchmarks/step_cost.py [--out DIR] [--quick] [--compile] [--device cpu|cuda]

A thin entry point: the code is ``scorepde.commands.step_cost`` (also ``scorepde-step-cost``).
"""

from scorepde.commands.step_cost import main

if __name__ == "__main__":
    main()
