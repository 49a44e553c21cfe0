"""torch_threads: 0 (auto) picks threads from the work size and the cores others leave free."""

from __future__ import annotations

import torch

from ppokit.rl.ppo import PPO
from ppokit.train.threads import TWO_THREADS_FROM, ThreadChooser


def test_auto_uses_two_threads_only_for_large_work_on_a_free_machine():
    big, small = ThreadChooser(0, TWO_THREADS_FROM), ThreadChooser(0, TWO_THREADS_FROM - 1)
    big.cores = small.cores = 2
    assert big.wanted(others_busy=0.0) == 2
    assert big.wanted(others_busy=1.0) == 1  # another process holds a core: spinning threads would wait
    assert small.wanted(others_busy=0.0) == 1
    big.cores = 1
    assert big.wanted(others_busy=0.0) == 1


def test_an_explicit_thread_count_is_kept_whatever_the_load():
    fixed = ThreadChooser(3, 1)
    assert fixed.wanted(others_busy=5.0) == 3 and fixed.update() == 3 and torch.get_num_threads() == 3
    torch.set_num_threads(1)


def test_the_thread_count_is_logged_and_auto_is_the_default():
    rows = []
    model = PPO("CartPole-v1", num_envs=2, n_steps=8, batch_size=16, tensorboard=False)
    assert model.config.torch_threads == 0
    model.learn(32, callback=lambda m, x: rows.append(x["train/torch_threads"]))
    assert rows and all(r == 1 for r in rows)  # batch 16 x 64: below the two-thread size
