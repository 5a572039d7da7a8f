"""credex: a cross-region public-credit data exchange node.

The package is one namespace over the repository's top-level folders:
``credex.node`` (node/), ``credex.adapters`` (adapters/), ``credex.crypto``
(crypto/), ``credex.domain`` (domain/) and the generated wire contract
``credex.v1`` (proto/credex/v1/).
"""

__version__ = "0.1.0"
