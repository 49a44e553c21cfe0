"""One guarded optimizer step for both sides: non-finite handling, float64 gradient norm, clipping.

A step whose loss or gradient is non-finite is skipped: parameters and optimizer moments stay
untouched, the skip is counted, and after ``nonfinite_stop_after`` skips in a row ``NonFiniteError``
stops the run (the caller then writes its emergency checkpoint of the last good state: every skipped
step changed nothing). Under torchrun the gradients are averaged first, so every rank sees the same
(non-)finite gradient and all ranks skip or step together with one collective per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ppokit import distributed
from ppokit.errors import NonFiniteError


def gradients(optimizers: list[Any], fill_missing: bool = False) -> list[torch.Tensor]:
    """The gradient tensors of ``optimizers``: FlatAdam's one flat buffer, or the ``.grad`` of each
    parameter of a ``torch.optim`` optimizer that has one. ``fill_missing`` creates zeros for the
    others: under torchrun every rank must average the same list, and a NaN fill must reach every
    parameter. Otherwise a parameter without a gradient stays without one, so that e.g. AdamW's weight
    decay does not move a parameter the loss never reached."""
    out: list[torch.Tensor] = []
    for opt in optimizers:
        if hasattr(opt, "flat_grad"):
            out.append(opt.flat_grad)
            continue
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is None and fill_missing:
                    p.grad = torch.zeros_like(p)
                if p.grad is not None:
                    out.append(p.grad)
    return out


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` together to a global norm of at most ``max_norm`` (the rule of
    ``torch.nn.utils.clip_grad_norm_``); return the norm before clipping, in float64 (non-finite if
    any gradient is)."""
    # In float64: a float32 sum of squares overflows to inf once gradients reach ~1e19 (e.g. a huge
    # vf_coef), which would skip a step that clipping handles; the gradients themselves keep their dtype.
    norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
    norm = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
    if math.isfinite(max_norm):
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.to(g.dtype))
    return norm


class GuardedStep:
    """``step(loss, backward) -> bool``: zero the gradients, run ``backward`` when the loss is finite,
    average across ranks, clip, and step every optimizer unless something is non-finite.

    ``context()`` names where training is (e.g. "update 3, step 4096") in the stop message.
    ``state_dict`` / ``load_state_dict`` carry the counters through checkpoints.
    """

    def __init__(
        self,
        optimizers: list[Any],
        max_grad_norm: float | None,
        nonfinite_stop_after: int,
        context: Callable[[], str] = lambda: "",
    ):
        self.optimizers = list(optimizers)
        self.max_grad_norm = math.inf if max_grad_norm is None else float(max_grad_norm)
        self.stop_after = int(nonfinite_stop_after)
        self.context = context
        self.skipped = 0  # steps skipped over the whole run
        self.in_a_row = 0
        self.last_norm = math.nan

    def zero_grad(self) -> None:
        """Clear every gradient (FlatAdam zeroes its flat buffer, of which the ``.grad``s are views;
        torch optimizers drop them, so a parameter the next loss does not reach gets none)."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self, loss: torch.Tensor | float, backward: Callable[[], None]) -> bool:
        """One optimizer step; returns whether it was taken (see the class docstring)."""
        self.zero_grad()
        finite = bool(torch.isfinite(loss)) if isinstance(loss, torch.Tensor) else math.isfinite(loss)
        if finite:
            backward()
            grads = gradients(self.optimizers, fill_missing=distributed.info().enabled)
        else:  # a NaN gradient instead: through the all-reduce every rank sees it and skips too
            grads = gradients(self.optimizers, fill_missing=True)
            for g in grads:
                g.fill_(math.nan)
        distributed.average_gradients(grads)
        norm = clip_grad_norm(grads, self.max_grad_norm)
        self.last_norm = float(norm)
        if not math.isfinite(self.last_norm):
            self.zero_grad()
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row >= self.stop_after:
                where = self.context()
                raise NonFiniteError(
                    f"the loss or its gradient was non-finite in {self.in_a_row} optimizer steps in a row "
                    f"({where + '; ' if where else ''}nonfinite_stop_after={self.stop_after})"
                )
            return False
        self.in_a_row = 0
        for opt in self.optimizers:
            opt.step()
        return True

    def state_dict(self) -> dict[str, int]:
        """The counters (JSON)."""
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore ``state_dict``'s counters."""
        self.skipped, self.in_a_row = int(state["skipped"]), int(state["in_a_row"])
