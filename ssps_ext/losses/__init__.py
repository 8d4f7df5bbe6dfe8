"""Self-supervised losses: NT-Xent / NT-Xent-AM and DINO."""

from .dino import DINOLoss  # noqa: F401
from .ntxent import NTXent  # noqa: F401
