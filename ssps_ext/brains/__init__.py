"""SpeechBrain ``Brain`` subclasses: SimCLR (NT-Xent/-AM) and DINO, with SSPS."""

from .dino import DINOBrain  # noqa: F401
from .simclr import SimCLRBrain  # noqa: F401
