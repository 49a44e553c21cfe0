"""Adam on one flat parameter buffer, for the fast path's MLP (and only there).

The fast path's hand-written backward (``grad.py``) writes each gradient straight into a view of one
flat buffer; FlatAdam owns that buffer. Every other classic policy (CNN, LSTM, a user's, on CUDA,
with ``manual_grad: false``) trains with ``torch.optim.Adam`` (``rl/update.py make_optimizers``).
Why not ``torch.optim.Adam`` here: measured on the 2-core dev machine (torch 2.13 CPU), constructing any
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

from ppokit.errors import CheckpointError

# torch's fused Adam kernel (torch.optim.Adam(fused=True) calls it); None where this torch lacks it
_FUSED_ADAM = getattr(torch, "_fused_adam_", None)


class FlatAdam:
    """Adam over ``params``, which it re-homes into one flat buffer (their values are kept).

    Mirrors the parts of the ``torch.optim`` API ppokit uses: ``param_groups[0]["lr"]``,
    ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``. Gradients accumulate in place
    into ``flat_grad``; it is a ``train.step.FlatGradOptimizer`` (``grad_buffers``), so the guarded
    step clips and averages that one buffer.
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

    def grad_buffers(self) -> list[torch.Tensor]:
        """``[flat_grad]``: the one tensor every parameter's ``.grad`` is a view of."""
        return [self.flat_grad]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the flat gradient (the views stay attached, so ``set_to_none`` is ignored)."""
        self.flat_grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every parameter."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        self.steps += 1
        if _FUSED_ADAM is not None and self.flat.device.type in ("cpu", "cuda"):
            # issue 33: the same Adam step in one kernel (what torch.optim.Adam(fused=True) calls); on
            # a 2-core CPU it took 0.43 ms against 1.26 ms for the ops below on 140k parameters
            # (HalfCheetah's 256-256 actor-critic), and equal values up to float32 rounding
            step = torch.tensor(float(self.steps), device=self.flat.device)
            _FUSED_ADAM(
                [self.flat], [self.flat_grad], [self.exp_avg], [self.exp_avg_sq], [], [step],
                amsgrad=False, lr=float(group["lr"]), beta1=beta1, beta2=beta2, weight_decay=0.0,
                eps=group["eps"], maximize=False,
            )  # fmt: skip
            return
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
        """Restore what ``state_dict`` returned, or a ``torch.optim.Adam`` state of the same
        parameters (its per-parameter moments are concatenated); anything else is a CheckpointError."""
        if not is_flat_state(state):
            state = flat_from_per_param(state, self.params)
        if state["state"]["exp_avg"].shape != self.exp_avg.shape:
            raise CheckpointError(
                f"optimizer state of {state['state']['exp_avg'].numel()} values does not fit this "
                f"policy's {self.exp_avg.numel()} parameters"
            )
        self.steps = int(state["state"]["step"])
        self.exp_avg.copy_(state["state"]["exp_avg"])
        self.exp_avg_sq.copy_(state["state"]["exp_avg_sq"])
        group = dict(state["param_groups"][0])
        group["betas"] = tuple(group["betas"])
        self.param_groups = [group]


def is_flat_state(state: dict[str, Any]) -> bool:
    """Whether ``state`` is FlatAdam's layout (one flat moment per kind, not one per parameter)."""
    return isinstance(state.get("state"), dict) and "exp_avg" in state["state"]


def per_param_from_flat(state: dict[str, Any], params: list[nn.Parameter]) -> dict[str, Any]:
    """FlatAdam's state as ``torch.optim.Adam``'s for the same ``params`` in the same order (the
    flat buffer is their concatenation): a checkpoint written when FlatAdam trained every classic
    policy loads into ``torch.optim.Adam``. A size mismatch is a CheckpointError."""
    try:
        inner = state["state"]
        sizes = [p.numel() for p in params]
        if inner["exp_avg"].numel() != sum(sizes):
            raise CheckpointError(
                f"optimizer state of {inner['exp_avg'].numel()} values does not fit these "
                f"{sum(sizes)} parameters"
            )
        avg, sq = inner["exp_avg"].split(sizes), inner["exp_avg_sq"].split(sizes)
        step = torch.tensor(float(inner["step"]))
        per = {}
        if int(inner["step"]) > 0:  # torch's Adam has no state for a parameter it never stepped
            for i, (p, a, q) in enumerate(zip(params, avg, sq)):
                per[i] = {
                    "step": step.clone(),
                    "exp_avg": a.view_as(p).clone(),
                    "exp_avg_sq": q.view_as(p).clone(),
                }
        group = dict(state["param_groups"][0], params=list(range(len(params))))
        group["betas"] = tuple(group["betas"])
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise CheckpointError(f"optimizer state is not a FlatAdam state: {e!r}") from None
    return {"state": per, "param_groups": [group]}


def flat_from_per_param(state: dict[str, Any], params: list[nn.Parameter]) -> dict[str, Any]:
    """Inverse of ``per_param_from_flat``: a ``torch.optim.Adam`` state of one param group as
    FlatAdam's. Anything else is a CheckpointError."""
    try:
        (group,) = state["param_groups"]
        per = state["state"]
        if len(group["params"]) != len(params):
            raise CheckpointError(
                f"optimizer state of {len(group['params'])} parameters does not fit these {len(params)}"
            )
        if not per:  # never stepped
            avg = torch.zeros(sum(p.numel() for p in params))
            sq, step = avg.clone(), 0
        else:
            avg = torch.cat([per[i]["exp_avg"].reshape(-1) for i in group["params"]])
            sq = torch.cat([per[i]["exp_avg_sq"].reshape(-1) for i in group["params"]])
            step = int(float(per[group["params"][0]]["step"]))
        flat_group = {k: group[k] for k in ("lr", "betas", "eps")}
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"optimizer state is not a torch.optim.Adam state of one group: {e!r}"
        ) from None
    return {"state": {"step": step, "exp_avg": avg, "exp_avg_sq": sq}, "param_groups": [flat_group]}
