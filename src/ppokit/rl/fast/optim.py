"""Adam on one flat parameter buffer, for the small networks of Gymnasium PPO.

Why not ``torch.optim.Adam``: measured on the 2-core dev machine (torch 2.13 CPU), constructing any
``torch.optim.Optimizer`` imports ``torch._dynamo`` (~1.0 s, a third of the CartPole time-to-solve
budget), and its per-parameter update costs ~0.25 ms per step on a 64-64 actor-critic. Here the
parameters are views into one contiguous tensor and their gradients views into another, so the
whole update (gradient clipping included) is a handful of tensor ops. The arithmetic is exactly
Adam's (Kingma & Ba 2015, Algorithm 1, with PyTorch's eps placement); a test checks it against
``torch.optim.Adam``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class FlatAdam:
    """Adam over ``params``, which it re-homes into one flat buffer (their values are kept).

    Mirrors the parts of the ``torch.optim`` API ppokit uses: ``param_groups[0]["lr"]``,
    ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``. Gradients accumulate in place
    into ``flat_grad`` (``train/step.py`` clips them with one norm).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = list(params)
        n = sum(p.numel() for p in self.params)
        ref = self.params[0]
        self.flat = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        self.flat_grad = torch.zeros_like(self.flat)
        offset = 0
        for p in self.params:
            k = p.numel()
            self.flat[offset : offset + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + k].view_as(p)
            p.grad = self.flat_grad[offset : offset + k].view_as(p)
            offset += k
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps}]
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the flat gradient (the views stay attached, so ``set_to_none`` is ignored)."""
        self.flat_grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every parameter."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        self.steps += 1
        self.exp_avg.lerp_(self.flat_grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(self.flat_grad, self.flat_grad, value=1.0 - beta2)
        bias1 = 1.0 - beta1**self.steps
        bias2 = 1.0 - beta2**self.steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(group["eps"])
        self.flat.addcdiv_(self.exp_avg, denom, value=-group["lr"] / bias1)

    def state_dict(self) -> dict[str, Any]:
        """Moments, step count and hyperparameters (tensors are copies)."""
        return {
            "state": {
                "step": self.steps,
                "exp_avg": self.exp_avg.clone(),
                "exp_avg_sq": self.exp_avg_sq.clone(),
            },
            "param_groups": [dict(self.param_groups[0], betas=list(self.param_groups[0]["betas"]))],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.steps = int(state["state"]["step"])
        self.exp_avg.copy_(state["state"]["exp_avg"])
        self.exp_avg_sq.copy_(state["state"]["exp_avg_sq"])
        group = dict(state["param_groups"][0])
        group["betas"] = tuple(group["betas"])
        self.param_groups = [group]
