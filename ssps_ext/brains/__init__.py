"""SpeechBrain ``Brain`` subclasses: SimCLR (NT-Xent/-AM) and DINO, with SSPS, and the supervised baseline."""

from .dino import DINOBrain  # noqa: F401
from .simclr import SimCLRBrain  # noqa: F401
from .supervised import SupervisedBrain  # noqa: F401
