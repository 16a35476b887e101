"""``python -m scorepde.audit``: the same as ``scorepde-audit``."""

from scorepde.audit import main

if __name__ == "__main__":
    main()
