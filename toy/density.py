"""Synthetic density benchmarks (Sec. 7.1, Figs. 4-5, App. D.1): a thin shim over
``scorepde.commands.density`` (the ``scorepde-density`` command)."""

from scorepde.commands.density import main

if __name__ == "__main__":
    main()
