"""The ``credex`` command line: ``python -m credex.node.cli`` or the ``credex`` script."""

from credex.node.cli.main import app, main

__all__ = ["app", "main"]
