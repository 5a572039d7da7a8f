"""A local federation and the ``credex demo`` that runs one end to end."""

from credex.node.demo.run import run_demo

__all__ = ["run_demo"]
