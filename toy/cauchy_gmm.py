"""The Cauchy problem of the score FPE (Sec. 6.1, Eqs. 20-21): a thin shim over
``scorepde.commands.cauchy`` (the ``scorepde-cauchy`` command)."""

from scorepde.commands.cauchy import main

if __name__ == "__main__":
    main()
