"""ssps-speechbrain: self-supervised speaker verification with SSPS for SpeechBrain.

Main entry points: ``ssps_ext.ssps.SSPS`` (the positive sampler),
``ssps_ext.losses.NTXent`` / ``DINOLoss``, ``ssps_ext.brains.SimCLRBrain`` /
``DINOBrain``, and the recipe in ``recipes/VoxCeleb/SSPS``.
"""

__version__ = "0.1.0"
