"""MorphZoo: deep-learning deformable registration and ultrasound segmentation as MONAI bundles.

Sub-packages (dependencies run one way, top to bottom):

- ``morphzoo.engines`` / ``morphzoo.inference``: glue to MONAI engines, the ``register`` API.
- ``morphzoo.networks``, ``morphzoo.losses``, ``morphzoo.metrics``, ``morphzoo.transforms``,
  ``morphzoo.data``, ``morphzoo.viz``: building blocks over ``monai`` and ``torch``.
"""

__version__ = "0.1.0"
