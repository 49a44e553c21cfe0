"""Micro-measurements behind the update's design (docs/benchmarks_presets.md), one torch thread.

    .venv/bin/python benchmarks/micro/micro.py

Prints microseconds per call of: tanh against the 2*sigmoid(2x)-1 form ppokit uses; one 256x64 @ 64x64
matrix product in torch and in numpy; and one PPO gradient step (minibatch 256, 64-64 actor-critic,
CartPole) with autograd (``manual_grad: false``) and with the hand-written gradient (the default),
split into its parts. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ppokit.rl.networks import tanh
from ppokit.rl.ppo import PPO


def per_call_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def step_parts(manual: bool) -> dict[str, float]:
    model = PPO("CartPole-v1", num_envs=8, n_steps=32, batch_size=256, tensorboard=False, manual_grad=manual)
    model.collector.collect(model.buffer)
    mb = model._flatten_rollout()

    def loss_only():
        with torch.no_grad():
            if manual:
                return model._loss_and_backward(mb, 0.2)
            return model.loss(mb, 0.2)

    def full_step():
        loss, terms, backward = model._loss_and_backward(mb, 0.2)
        model._step(loss, backward)
        return [float(v) for v in terms.values()]

    parts = {"forward + loss terms (no gradient)": per_call_us(loss_only, 500)}
    parts["whole step: forward, loss, gradient, clip, Adam"] = per_call_us(full_step, 500)
    model.close()
    return parts


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(2, 256, 64)
    print(f"torch.tanh on [2, 256, 64]                 {per_call_us(lambda: torch.tanh(x)):8.1f} us")
    print(f"torch.sigmoid on [2, 256, 64]              {per_call_us(lambda: torch.sigmoid(x)):8.1f} us")
    print(f"ppokit tanh = 2*sigmoid(2x)-1              {per_call_us(lambda: tanh(x)):8.1f} us")
    print(f"max |tanh - ppokit tanh|                   {float((torch.tanh(x) - tanh(x)).abs().max()):.1e}")
    h, w = torch.randn(256, 64), torch.randn(64, 64)
    hn, wn = h.numpy(), w.numpy()
    print(f"torch 256x64 @ 64x64                       {per_call_us(lambda: h @ w.t()):8.1f} us")
    print(f"numpy 256x64 @ 64x64 (its own BLAS threads) {per_call_us(lambda: hn @ wn.T):7.1f} us")
    for manual in (False, True):
        name = "hand-written gradient" if manual else "autograd"
        for part, us in step_parts(manual).items():
            print(f"PPO step, {name:22s} {part:48s} {us:8.1f} us")
    print(f"(numpy {np.__version__}, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    main()
