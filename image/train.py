"""Train an image score model: ``scorepde.commands.train`` (the ``scorepde-train`` command)
from the source checkout; ``python image/train.py --help`` lists the flags."""

from scorepde import distributed as dd
from scorepde.commands.train import main, parse_args  # noqa: F401  (parse_args: for the tests)

if __name__ == "__main__":
    dd.exit_process(main())
