"""One seed for torch, numpy and Python's random, so equal seeds give equal runs on CPU."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy's legacy global RNG and torch; return a fresh numpy Generator for our use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def rng_state() -> dict:
    """Capture torch's and Python's RNG states (for checkpoints)."""
    return {"torch": torch.get_rng_state(), "python": random.getstate()}
