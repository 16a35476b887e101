"""Conservativity and the score-FPE residual (Sec. 6.2, Fig. 3): a thin shim over
``scorepde.commands.conservativity`` (the ``scorepde-conservativity`` command)."""

from scorepde.commands.conservativity import main

if __name__ == "__main__":
    main()
