"""How wrong is each estimator of the score-FPE residual, and what does it cost (App. C.3)?

    python benchmarks/estimator_error.py [--out DIR] [--quick] [--device cpu|cuda]

A thin entry point: the code is ``scorepde.commands.estimator_error`` (also ``scorepde-estimator-error``).
"""

from scorepde.commands.estimator_error import main

if __name__ == "__main__":
    main()
