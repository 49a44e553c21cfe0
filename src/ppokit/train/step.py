"""One guarded optimizer step for both sides: non-finite handling, float64 gradient norm, clipping.

The contract, the same for classic PPO and the language-model trainers: ``GuardedStep.step(closure)``
zeroes the gradients and calls ``closure()``, which runs the forward and backward passes of the
step's (micro-)batches and returns the step's real loss (the micro-batches' losses summed, as they
were backpropagated, before any fp16 loss scale). The step is taken when that loss and the gradient
norm are both finite. Optimizers are ``torch.optim`` optimizers, or ``FlatGradOptimizer``s whose
gradients live in buffers of their own (the classic fast path's FlatAdam, ``rl/fast/optim.py``).

A step whose loss or gradient is non-finite is skipped: parameters and optimizer moments stay
untouched, the skip is counted, and after ``nonfinite_stop_after`` skips in a row ``NonFiniteError``
stops the run (the caller then writes its emergency checkpoint of the last good state: every skipped
step changed nothing). Under torchrun the gradients are averaged first, so every rank sees the same
(non-)finite gradient and all ranks skip or step together with one collective per step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from ppokit import distributed
from ppokit.errors import NonFiniteError


@runtime_checkable
class FlatGradOptimizer(Protocol):
    """An optimizer that keeps its parameters' gradients in buffers of its own (every ``.grad`` a view
    into them, always present): the guard clips and averages ``grad_buffers()`` in place, one tensor
    op each, instead of every ``.grad``. ``zero_grad`` zeroes them (the views stay attached)."""

    def grad_buffers(self) -> list[torch.Tensor]:
        """The tensors that hold every parameter's gradient."""
        ...


@functools.cache
def _keeps_own_gradients(cls: type) -> bool:
    # once per class: an isinstance check against a runtime protocol costs ~50 us, per step
    return issubclass(cls, FlatGradOptimizer)


def gradients(optimizers: list[Any], fill_missing: bool = False) -> list[torch.Tensor]:
    """The gradient tensors of ``optimizers``: a ``FlatGradOptimizer``'s ``grad_buffers()``, or the
    ``.grad`` of each parameter of a ``torch.optim`` optimizer that has one. ``fill_missing`` creates
    zeros for the others: under torchrun every rank must average the same list, and a NaN fill must
    reach every parameter. Otherwise a parameter without a gradient stays without one, so that e.g.
    AdamW's weight decay does not move a parameter the loss never reached."""
    out: list[torch.Tensor] = []
    for opt in optimizers:
        if _keeps_own_gradients(type(opt)):
            out.extend(opt.grad_buffers())
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
    # One op per list where the gradients share device and dtype (a torch optimizer's dozen tensors:
    # measured ~40 us less per step on the CPU MLP; the norms are bitwise the same).
    alike = len(grads) > 1 and len({(g.device, g.dtype) for g in grads}) == 1
    if alike:
        norms = list(torch._foreach_norm(grads, 2, dtype=torch.float64))
    else:
        norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
    norm = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
    if math.isfinite(max_norm):
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if alike:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        else:
            for g in grads:
                g.mul_(scale.to(g.dtype))
    return norm


def _clip_sharded(shards: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm`` of gradients sharded over the ranks: the sum of squares of this rank's
    shards, summed over ranks (one all-reduce), is the whole gradient's; every rank scales its own
    shards by the same factor. A non-finite shard on one rank makes the norm non-finite on all."""
    sq = torch.zeros((), dtype=torch.float64, device=shards[0].device if shards else "cpu")
    for g in shards:
        if g.numel():
            sq = sq + torch.linalg.vector_norm(g, dtype=torch.float64) ** 2
    if distributed.info().enabled:
        torch.distributed.all_reduce(sq)
    norm = sq.sqrt()
    if math.isfinite(max_norm):
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for g in shards:
            g.mul_(scale.to(g.dtype))
    return norm


class LossScaler:
    """Dynamic loss scaling for float16 training (Micikevicius et al. 2018, *Mixed Precision Training*,
    https://arxiv.org/abs/1710.03740), with the defaults of ``torch.amp.GradScaler``.

    The loss is multiplied by ``scale`` before ``backward`` so that small float16 gradients do not
    underflow; the gradients are divided by it again before clipping and the step. A step whose
    gradients overflowed (inf/NaN) is skipped and the scale halves; after ``growth_interval`` good steps
    in a row it doubles. Written out instead of using ``GradScaler`` so the decision is taken on the
    rank-averaged gradients (every rank skips and rescales alike) and the state is plain JSON.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ):
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.overflows = 0

    def update(self, finite: bool) -> None:
        """Halve the scale after an overflow; double it after ``growth_interval`` good steps."""
        if not finite:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.overflows += 1
            return
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0

    def state_dict(self) -> dict[str, float]:
        """The scale and counters (JSON)."""
        return {"scale": self.scale, "good_steps": self.good_steps, "overflows": self.overflows}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``state_dict``'s values."""
        self.scale = float(state["scale"])
        self.good_steps, self.overflows = int(state["good_steps"]), int(state["overflows"])


class GuardedStep:
    """``step(closure) -> bool``: zero the gradients, run ``closure`` (forward and backward; it returns
    the step's loss), average across ranks, clip, and step every optimizer unless the loss or the
    gradient is non-finite (the module docstring has the contract).

    ``context()`` names where training is (e.g. "update 3, step 4096") in the stop message.
    ``state_dict`` / ``load_state_dict`` carry the counters through checkpoints.

    With a ``LossScaler`` (float16 training) ``closure`` must multiply its loss by ``loss_scale`` before
    ``backward`` (and return the unscaled loss); the
    gradients are unscaled here, and a non-finite gradient is an overflow: the step is skipped, counted
    in ``skipped`` and the scale halves. Overflows count towards ``nonfinite_stop_after`` only once the
    scale has fallen to 1 or below (then the gradient is non-finite for another reason than the scale).
    """

    def __init__(
        self,
        optimizers: list[Any],
        max_grad_norm: float | None,
        nonfinite_stop_after: int,
        context: Callable[[], str] = lambda: "",
        scaler: LossScaler | None = None,
        reduced: bool = False,
    ):
        self.optimizers = list(optimizers)
        # True when the gradients arrive already averaged over ranks (FSDP2 reduce-scatters them in
        # the backward pass): averaging again here would divide them by the world size twice
        self.reduced = reduced
        self.scaler = scaler
        self.max_grad_norm = math.inf if max_grad_norm is None else float(max_grad_norm)
        self.stop_after = int(nonfinite_stop_after)
        self.context = context
        self.skipped = 0  # steps skipped over the whole run
        self.in_a_row = 0
        self.last_norm = math.nan

    @property
    def loss_scale(self) -> float:
        """What ``closure`` multiplies its loss by before ``backward``: the loss scale in float16
        training, else 1."""
        return self.scaler.scale if self.scaler is not None else 1.0

    def zero_grad(self) -> None:
        """Clear every gradient (a ``FlatGradOptimizer`` zeroes its buffers, of which the ``.grad``s
        are views; torch optimizers drop them, so a parameter the next loss does not reach gets none)."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], torch.Tensor | float]) -> bool:
        """One optimizer step: ``closure()`` runs the step's forward and backward passes and returns
        its loss; returns whether the step was taken (see the class docstring)."""
        self.zero_grad()
        loss = closure()
        finite = bool(torch.isfinite(loss)) if isinstance(loss, torch.Tensor) else math.isfinite(loss)
        grads = gradients(self.optimizers, fill_missing=distributed.info().enabled or not finite)
        sharded = bool(grads) and hasattr(grads[0], "to_local")  # FSDP2: DTensors, this rank holds shards
        local = [g.to_local() for g in grads] if sharded else grads
        if not finite:  # NaN gradients: through the all-reduce every rank sees them and skips too
            for g in local:
                g.fill_(math.nan)
        if not self.reduced:
            distributed.average_gradients(grads)
        if self.scaler is not None and finite:
            for g in local:
                g.mul_(1.0 / self.scaler.scale)
        norm = (
            _clip_sharded(local, self.max_grad_norm) if sharded else clip_grad_norm(grads, self.max_grad_norm)
        )
        self.last_norm = float(norm)
        if self.scaler is not None:
            scale_before = self.scaler.scale
            self.scaler.update(math.isfinite(self.last_norm))
        if not math.isfinite(self.last_norm):
            self.zero_grad()
            self.skipped += 1
            if self.scaler is None or scale_before <= 1.0:  # an overflow of a large scale is routine
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

    def state_dict(self) -> dict[str, Any]:
        """The counters, and the loss scaler's state when there is one (JSON)."""
        state: dict[str, Any] = {"skipped": self.skipped, "in_a_row": self.in_a_row}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s counters (and the loss scale)."""
        self.skipped, self.in_a_row = int(state["skipped"]), int(state["in_a_row"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
