"""The code behind every script of the source checkout (``image/train.py``, ``toy/density.py``,
``benchmarks/likelihood_cost.py``, …), one module per script, each with ``main(argv=None)``.
The script files are thin shims over their modules here, so an installed wheel runs the same
code; the ones in ``[project.scripts]`` are console commands too (``scorepde-train``, …).
Commands parse flags and call the library; they hold no math.
"""
