"""The CPU fast path for the built-in MLP: no-autograd forward, hand-written gradient (``grad.py``).

``manual_grad: auto | true | false`` chooses it. ``auto`` (the default) uses it only where it is
exactly right; ``true`` where it cannot be used is a ConfigError naming the reason; ``false`` never.
``unsupported_reason`` is the capability check: it lists every choice the hand-written gradient
covers and refuses everything else (fail closed), and the tests iterate over every choice that
exists, so a new objective, activation, value loss or action space is either tested here or refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppokit.errors import ConfigError
from ppokit.rl.fast.grad import ManualGrad, loss_and_grads

# Exactly what grad.py implements (each branch there names one of these and raises otherwise).
OBJECTIVES = frozenset({"clip", "none", "kl_penalty", "kl_adaptive"})
ACTIVATIONS = frozenset({"tanh", "relu", "elu"})
VALUE_LOSSES = frozenset({"mse", "huber"})
# every kind of the built-in MLP but Beta (its digamma/trigamma derivatives are not written out)
ACTION_KINDS = frozenset({"discrete", "multidiscrete", "box", "squashed_box", "multibinary"})


def unsupported_reason(
    policy: Any, config: Any, own_loss: bool, device: torch.device, masked: bool = False
) -> str | None:
    """Why the fast path cannot train this run exactly, or None when it can (``masked``: the env gives
    action masks)."""
    from ppokit.rl.networks import MlpActorCritic

    if type(policy) is not MlpActorCritic:  # this refuses recurrent policies too (rl/recurrent.py)
        return f"the policy is {type(policy).__name__}, not the built-in MlpActorCritic"
    if masked:
        return "the env gives action masks (the hand-written gradient has no masked softmax)"
    if not own_loss:
        return "PPO.loss is overridden (the hand-written gradient is that of the built-in loss)"
    if device.type != "cpu":
        return f"the device is {device.type} (the fast path is for CPUs)"
    if config.bf16:
        return "bf16 is on (the hand-written gradient is float32 arithmetic)"
    checks = (
        ("objective", config.objective, OBJECTIVES),
        ("network.activation", config.network.activation, ACTIVATIONS),
        ("value_loss", config.value_loss, VALUE_LOSSES),
        ("action space", policy.kind, ACTION_KINDS),
    )
    for key, value, supported in checks:
        if value not in supported:
            return f"{key}={value!r} has no hand-written gradient (supported: {sorted(supported)})"
    return None


def choose(
    policy: Any, config: Any, own_loss: bool, device: torch.device, masked: bool = False
) -> ManualGrad | None:
    """The fast path's backward for this run, or None for autograd (see the module docstring)."""
    if config.manual_grad is False:
        return None
    reason = unsupported_reason(policy, config, own_loss, device, masked)
    if reason is None:
        return ManualGrad(policy)
    if config.manual_grad is True:
        raise ConfigError(f"manual_grad=True is not allowed here: {reason}; use manual_grad=auto or false")
    return None


def fast_loss_and_backward(
    fast: ManualGrad,
    config: Any,
    mb: dict[str, torch.Tensor],
    adv: torch.Tensor,
    clip_range: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Callable[[], None]]:
    """The minibatch loss, its terms, and the function that writes its gradient into every
    parameter's ``.grad`` (the same loss as ``PPO.loss``, tested equal)."""
    policy = fast.policy
    out, values, saved = policy.infer(mb["obs"])
    loss, terms, grads = loss_and_grads(policy, config, mb, adv, out, values, clip_range, kl_coef)

    def backward() -> None:
        if "log_std" in grads:
            policy.actor_log_std.grad.copy_(grads["log_std"])
        fast.backward(saved, grads["out"], grads["value"])

    return loss, terms, backward


__all__ = ["ManualGrad", "choose", "fast_loss_and_backward", "loss_and_grads", "unsupported_reason"]
