"""A tiny diffusers model for trying scorepde's adapters and audit: the package's own
``scorepde.examples.tiny_diffusers`` (importable from any folder), re-exported here.

    scorepde-audit --model scorepde.examples.tiny_diffusers:factory --data digits --quick
    scorepde-audit --model examples/tiny_diffusers.py:factory --data digits --quick
"""

from scorepde.examples.tiny_diffusers import factory, tiny_unet

__all__ = ["factory", "tiny_unet"]
