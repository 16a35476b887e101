"""Evaluate a checkpoint of image/train.py: ``python image/eval.py CKPT`` = ``scorepde-eval CKPT``.
The code lives in scorepde/commands/eval.py (see its --help)."""

from scorepde.commands.eval import main

if __name__ == "__main__":
    raise SystemExit(main())
