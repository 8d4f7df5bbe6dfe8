"""Self-supervised losses: NT-Xent / NT-Xent-AM, MoCo (with margin) and DINO."""

from .dino import DINOLoss  # noqa: F401
from .moco import MoCoLoss  # noqa: F401
from .ntxent import NTXent  # noqa: F401
