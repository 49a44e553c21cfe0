"""The rollout's per-step act for the built-in MLP in numpy (issue 33): the same sample as
``MlpActorCritic.act``, without a torch op per layer.

With one env (the MuJoCo presets) every rollout step is one actor pass on a batch of 1. Each torch
call there costs several microseconds of dispatch whatever its arithmetic: ``act`` took ~0.2 ms a
step on HalfCheetah's 256-256 actor (three ``addmm``, two activations, ``exp``, ``randn_like``, the
Gaussian log-density: ~15 torch calls). numpy's matrix-vector products on float32 copies of the
parameters cost ~1-3 us each, so ``NumpyActor`` computes the actor in numpy.

It draws its noise from torch's global generator with the shapes and dtypes ``ActionDistribution.
sample`` uses (``torch.randn`` for the Gaussian, ``torch.rand`` for the Gumbel-max categorical), so a
seeded run samples the same actions as the torch path, up to float32 rounding of the matrix products
(tests/test_fast_act.py compares both to tight tolerance). ``for_policy`` lists what it covers and
returns None for everything else (fail closed: the rollout then calls ``policy.act``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ppokit.rl.networks import MlpActorCritic

_LOG_2PI = math.log(2 * math.pi)
KINDS = frozenset({"box", "discrete"})  # the diagonal Gaussian and the categorical
ACTIVATIONS = frozenset({"tanh", "relu", "elu"})


def unsupported_reason(
    policy: Any, device: torch.device, bf16: bool, masked: bool, recurrent: bool
) -> str | None:
    """Why the numpy act cannot stand in for ``policy.act`` exactly, or None when it can."""
    if type(policy) is not MlpActorCritic:  # a subclass may override act; recurrent policies too
        return f"the policy is {type(policy).__name__}, not the built-in MlpActorCritic"
    if "act" in vars(policy):  # act replaced on the instance (a test's deterministic rollout): it is used
        return "policy.act is replaced on the instance"
    if recurrent or masked:
        return "recurrent state or action masks"
    if device.type != "cpu":
        return f"the device is {device.type}"
    if bf16:
        return "bf16 autocast (the torch path computes the actor in bfloat16)"
    if policy.kind not in KINDS:
        return f"action kind {policy.kind!r} (covered: {sorted(KINDS)})"
    if policy.cfg.activation not in ACTIVATIONS:
        return f"activation {policy.cfg.activation!r}"
    return None


def _t(weight: torch.Tensor) -> np.ndarray:
    """``W^T`` as a C-contiguous float32 copy: OpenBLAS took ~300 us for a 128x64 @ (64x64 transposed
    view) product on the loaded 2-core machine and ~20 us with the contiguous copy. One copy per rollout
    (the parameters do not change during one)."""
    return np.ascontiguousarray(weight.detach().numpy().T)


class NumpyActor:
    """``MlpActorCritic.act`` for one rollout: numpy copies of the actor's parameters, taken when the
    rollout starts (the parameters do not change during it, and the optimizer may re-home them
    between rollouts: rl/fast/optim.py's FlatAdam)."""

    def __init__(self, policy: MlpActorCritic):
        part = "trunk" if policy.trunk is not None else "actor"
        # ``x @ W^T + b`` is what ``addmm(b, x, w.t())`` computes
        self.layers = [(_t(w), b.detach().numpy()) for w, b in policy.linears(part)]
        head = policy.actor_head
        self.head = (_t(head.weight), head.bias.detach().numpy())
        self.activation = policy.cfg.activation
        self.gaussian = policy.dist.gaussian
        if self.gaussian:
            log_std = policy.log_std().detach()  # clamped, as the torch path uses it
            self.std = torch.exp(log_std).numpy()
            self.inv_std = torch.exp(-log_std).numpy()
            # the terms of the log-density that do not depend on the sample, as the torch path adds them
            self.log_std = log_std.numpy()
        self._noise: torch.Tensor | None = None  # reused: torch.randn((1, 6)) cost ~5 us, normal_ ~1.5

    def _draw(self, shape: tuple[int, ...], normal: bool) -> np.ndarray:
        """``randn``/``rand`` of ``shape`` from torch's generator (``randn_like`` is ``normal_`` on a
        fresh tensor, ``rand_like`` ``uniform_``: the same numbers), as a numpy view."""
        if self._noise is None or tuple(self._noise.shape) != shape:
            self._noise = torch.empty(shape)
        noise = self._noise.normal_() if normal else self._noise.uniform_()
        return noise.numpy()

    def _activate(self, z: np.ndarray) -> np.ndarray:
        if self.activation == "tanh":
            return np.tanh(z, out=z)
        if self.activation == "relu":
            return np.maximum(z, 0.0, out=z)
        if self.activation == "elu":
            return np.where(z > 0.0, z, np.expm1(np.minimum(z, 0.0))).astype(np.float32, copy=False)
        raise AssertionError(f"unreachable: activation {self.activation!r} is refused by unsupported_reason")

    def output(self, obs: np.ndarray) -> np.ndarray:
        """Logits or Gaussian mean ``[B, out]`` of float32 observations ``[B, obs_dim]``."""
        h = obs.reshape(obs.shape[0], -1)
        for w_t, b in self.layers:
            h = self._activate(np.add(h @ w_t, b))
        w_t, b = self.head
        return np.add(h @ w_t, b)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actions, logp)`` as ``MlpActorCritic.act`` samples them: ``[B, k]`` float32 and ``[B]``
        for a Gaussian, ``[B]`` int64 and ``[B]`` for a categorical."""
        out = self.output(obs)
        if self.gaussian:  # ActionDistribution.sample: mean + std * N(0, 1), and its log-density
            action = out + self.std * self._draw(out.shape, normal=True)
            z = (action - out) * self.inv_std
            logp = (-0.5 * z * z - self.log_std - np.float32(0.5 * _LOG_2PI)).sum(-1)
            return action, logp
        # Gumbel-max on the log-softmax, with the uniforms the torch path draws (rand_like(log_probs))
        m = out.max(-1, keepdims=True)
        log_probs = out - (m + np.log(np.exp(out - m).sum(-1, keepdims=True)))
        u = self._draw(out.shape, normal=False)
        minus_g = np.log(-np.log(np.maximum(u, np.float32(1e-20))))  # u <= 1 already: clamp(1e-20, 1)
        action = (log_probs - minus_g).argmax(-1)
        return action, np.take_along_axis(log_probs, action[:, None], -1)[:, 0]
