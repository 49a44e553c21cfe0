"""``lr_schedule: adaptive``: the KL-adaptive learning rate rsl_rl users expect (issue 32).

rsl_rl's PPO (``rsl_rl/algorithms/ppo.py``, ``schedule == "adaptive"``) measures, on each minibatch
before its step, the KL between the rollout's policy and the current one and sets
``lr /= 1.5`` when it exceeds ``2 * desired_kl``, ``lr *= 1.5`` when it is below ``desired_kl / 2``,
keeping lr in ``[1e-5, 1e-2]``. ppokit measures the KL with its ``approx_kl`` estimator (the
minibatch loss's own diagnostic, any action distribution) where rsl_rl uses the closed-form
Gaussian KL. The adapted rate is training state: saved in checkpoints and restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

LR_MIN, LR_MAX, FACTOR = 1e-5, 1e-2, 1.5


class AdaptiveLR:
    """The current learning rate and the rule that adapts it (see the module docstring)."""

    def __init__(self, lr: float, desired_kl: float):
        self.base_lr = float(lr)
        self.lr = min(max(float(lr), LR_MIN), LR_MAX)
        self.desired_kl = float(desired_kl)

    def observe(self, kl: float) -> float:
        """Adapt to one minibatch's KL; return the new learning rate."""
        if kl > 2.0 * self.desired_kl:
            self.lr = max(LR_MIN, self.lr / FACTOR)
        elif kl < self.desired_kl / 2.0:  # as rsl_rl: also the first minibatch of an update (KL 0)
            self.lr = min(LR_MAX, self.lr * FACTOR)
        return self.lr

    @property
    def scale(self) -> float:
        """The factor the configured learning rates are multiplied by now."""
        return self.lr / self.base_lr

    def wrap(self, loss_and_backward: Callable, optimizers: list[Any]) -> Callable:
        """``loss_and_backward`` that first adapts the rate to the minibatch's ``approx_kl`` and sets
        it on every optimizer (a critic's own rate keeps its ratio to the actor's)."""

        def adapted(mb: dict[str, torch.Tensor], clip_range: float) -> tuple:
            loss, terms, backward = loss_and_backward(mb, clip_range)
            old = self.lr
            new = self.observe(float(terms["approx_kl"]))
            if new != old:
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = group["lr"] * new / old
            return loss, terms, backward

        return adapted

    def state_dict(self) -> dict[str, float]:
        """The current learning rate."""
        return {"lr": self.lr}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``state_dict``."""
        self.lr = float(state["lr"])
