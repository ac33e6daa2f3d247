"""Find model weights and say exactly what they are: a file and its sha256.

Every source ends as one local file that is hashed, so a randomly initialised model, a
downloaded tag and a user's checkpoint are all identified the same way and later stages can
check that they use the very same weights.
"""

from __future__ import annotations

import os


class WeightsUnavailable(RuntimeError):
    """Weights that are neither on disk nor downloadable here; the message says how to get them."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
