"""SpeechBrain ``Brain`` subclasses: SimCLR (NT-Xent/-AM) and DINO, with SSPS, the supervised baseline and DLG-LC pseudo-label rounds."""

from .dino import DINOBrain  # noqa: F401
from .pseudo_label import PseudoLabelBrain  # noqa: F401
from .simclr import SimCLRBrain  # noqa: F401
from .supervised import SupervisedBrain  # noqa: F401
