"""The code behind each console command of ``[project.scripts]``, one module per command,
each with ``main(argv=None)``. A script file of the source checkout (``image/train.py``, …)
is a thin shim over its module here, so an installed wheel and ``python image/train.py``
run the same code. Commands parse flags and call the library; they hold no math.
"""
