"""The fine-tuning protocol of Table 5 on small images: ``scorepde.commands.finetune`` (the
``scorepde-finetune`` command) from the source checkout; ``python image/finetune.py --help``."""

import sys

from scorepde.commands.finetune import main

if __name__ == "__main__":
    sys.exit(main())
