"""Self-Supervised Positive Sampling: queues, k-means, samplers, the SSPS hook."""

from .core import SSPS  # noqa: F401
from .kmeans import available_backends, spherical_kmeans  # noqa: F401
from .queue import RingQueue  # noqa: F401
