"""Small example models that ship with the package, so ``--model scorepde.examples.<name>:factory``
works from any folder."""
