"""The accuracy side of two of #12's cheaper estimators (one-sided ∂t, Hutch++), on the step-cost U-Net.

    python benchmarks/lever_error.py [--out DIR] [--quick] [--data-dir DIR]

A thin entry point: the code is ``scorepde.commands.lever_error``.
"""

from scorepde.commands.lever_error import main

if __name__ == "__main__":
    main()
