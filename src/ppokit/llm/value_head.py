"""The critic of PPO for RLHF: ``ValueHead``, one linear layer from the LM's final hidden state to a
scalar, one value per token. (The reward model, a separate network never trained here, is
``ppokit.llm.reward_model``.)"""

from __future__ import annotations

import math

import torch
from torch import nn


class ValueHead(nn.Module):
    """``V = w . h + b`` on hidden states ``[..., d]`` -> ``[...]`` (float32 whatever the trunk's dtype).

    The weight starts from N(0, 1/sqrt(d + 1)) and the bias at 0: the initialisation Huang et al. give
    for the scalar head of the RLHF reward model ("The N+ implementation details of RLHF with PPO",
    2024, detail on the reward head), small enough that early values do not swamp the advantages.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Values ``[...]`` of hidden states ``[..., d]``, in float32 even under bf16/fp16 autocast (the
        value loss is a regression on returns; half precision would round its targets)."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.linear(hidden.float()).squeeze(-1)


def hidden_size(model: nn.Module) -> int:
    """The width of a transformers model's final hidden states (``hidden_size`` or GPT-2's ``n_embd``)."""
    cfg = model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__}")


__all__ = ["ValueHead", "hidden_size"]
