"""phagoflow — Opera autophagy screening plates to per-well phagophore and autolysosome counts.

A pure core (:mod:`phagoflow.core`: Opera readers, simulator, CIP, U-Net, tiling, counting,
evaluation) with a CLI (:mod:`phagoflow.cli`) and, later, streaming services on top.
"""

__version__ = "0.1.0"
