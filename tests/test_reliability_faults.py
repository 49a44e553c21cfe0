"""Faults stop a run clearly: NaN/Inf from an environment, non-finite losses, and environments that
raise or die inside async workers (no bare EOFError, no child process left behind)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from faulty_envs import faulty_factory

from ppokit.errors import EnvStepError, NonFiniteError
from ppokit.rl.ppo import PPO
from ppokit.train.checkpoint import latest_checkpoint, load_checkpoint

SMALL = dict(num_envs=2, n_steps=8, batch_size=8, n_epochs=1, tensorboard=False)
TESTS = Path(__file__).resolve().parent


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()]).clone()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# -- NaN / Inf from the environment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "fail_at", "field"),
    [
        ("nan_obs", 5, "observation"),
        ("nan_reward", 5, "reward"),
        ("nan_obs", 10, r"final observation \(info\['final_obs'\]\)"),  # episodes truncate at 10
        ("huge_obs", 5, "observation"),  # float64 1e300: finite, but inf in float32
    ],
    ids=["obs", "reward", "final_obs", "float64_overflow"],
)
def test_nonfinite_env_output_stops_naming_env_step_and_field(mode, fail_at, field):
    # env 1 misbehaves at its `fail_at`-th step: env step fail_at * 2 (both envs together)
    model = PPO(faulty_factory(mode, fail_at=fail_at, fail_env=1), **SMALL, vectorization="sync")
    step = 2 * fail_at
    with pytest.raises(EnvStepError, match=f"environment 1 returned a non-finite {field} at step {step}"):
        model.learn(32)
    model.close()


def test_nan_policy_skip_drops_and_counts_the_transition():
    metrics = []
    # env 1 sends a NaN observation at its 12th step, in the second rollout of 8 steps per env
    model = PPO(faulty_factory("nan_obs", fail_at=12, fail_env=1), **SMALL, nan_policy="skip")
    model.learn(64, callback=lambda m, x: metrics.append(x))
    assert model.collector.skipped_nonfinite == 1
    assert [m["rollout/nonfinite_skipped"] for m in metrics] == [0, 1, 1, 1]
    assert all(np.isfinite(m["train/policy_loss"]) for m in metrics)
    assert torch.isfinite(_params(model)).all()
    model.close()


# -- non-finite losses and gradients --------------------------------------------------------------


class NaNLoss(PPO):
    """A PPO whose loss is NaN on the minibatch steps listed in ``bad_steps`` (counted from 0)."""

    bad_steps: set[int] = set()

    def _loss_and_backward(self, mb, clip_range):
        loss, terms, backward = super()._loss_and_backward(mb, clip_range)
        self.calls = getattr(self, "calls", -1) + 1
        if self.calls in self.bad_steps:
            loss = loss * float("nan")
        return loss, terms, backward


def test_nonfinite_loss_skips_the_step_and_counts_it():
    # 4 minibatches per update (16 samples / 4); steps 1 and 2 of the first update are NaN.
    cfg = dict(SMALL, batch_size=4)
    NaNLoss.bad_steps = {1, 2}
    metrics = []
    model = NaNLoss("CartPole-v1", **cfg).learn(16, callback=lambda m, x: metrics.append(x))
    assert model.nonfinite_skipped == 2 and model.guard.in_a_row == 0
    assert metrics[0]["train/minibatch_steps"] == 2 and metrics[0]["train/nonfinite_skipped"] == 2
    assert np.isfinite(metrics[0]["train/loss"])  # skipped steps stay out of the averages
    # A skipped step changes nothing: the same run with those two minibatches' steps removed agrees.
    NaNLoss.bad_steps = set()
    reference = NaNLoss("CartPole-v1", **cfg)
    reference.guard.step = _skipping(reference, {1, 2})
    reference.learn(16)
    assert torch.equal(_params(model), _params(reference))


def _skipping(model, skip):
    step, calls = model.guard.step, iter(range(10**6))

    def wrapped(closure):
        if next(calls) in skip:
            for opt in model.optimizers:
                opt.zero_grad(set_to_none=True)
            return False
        return step(closure)

    return wrapped


def test_k_nonfinite_steps_in_a_row_stop_with_an_emergency_checkpoint(tmp_path):
    # Updates of 2 minibatches; from the 3rd minibatch step on, every loss is NaN; K = 3.
    NaNLoss.bad_steps = set(range(2, 100))
    model = NaNLoss("CartPole-v1", **SMALL, nonfinite_stop_after=3, run_dir=tmp_path)
    good = None

    def remember(m, x):
        nonlocal good
        good = _params(m)

    with pytest.raises(
        NonFiniteError, match=r"non-finite in 3 optimizer steps in a row.*emergency checkpoint"
    ):
        model.learn(10_000, callback=remember)
    assert model.nonfinite_skipped == 3
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt is not None
    resumed = PPO.resume(ckpt, run_dir=tmp_path / "after")
    # Update 1 stepped twice; update 2 skipped both steps, update 3 its first, then the stop.
    assert torch.equal(_params(model), good)  # no skipped step changed the parameters
    assert torch.equal(_params(resumed), good)  # and the emergency checkpoint holds them
    assert resumed.num_timesteps == 48 and resumed.nonfinite_skipped == 3
    model.close()
    resumed.close()


# -- environments that raise or die in async workers ----------------------------------------------


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("raise", r"environment 1 raised RuntimeError: injected failure in its worker process"),
        ("exit", r"environment 1 \(exit code 3\) died in its worker process"),
    ],
)
def test_async_worker_failure_names_the_env_and_leaves_no_children(mode, match):
    before = _children()
    model = PPO(faulty_factory(mode, fail_at=3, fail_env=1), **SMALL, vectorization="async")
    assert len(_children() - before) == 2  # two worker processes
    with pytest.raises(EnvStepError, match=match) as info:
        model.learn(64)
    if mode == "raise":  # the worker's own traceback, down to the line that raised
        assert "worker traceback of environment 1" in info.value.details
        assert 'raise RuntimeError("injected failure")' in info.value.details
    model.close()
    assert _children() - before == set()


def test_cli_async_worker_error_is_reported_and_keeps_the_last_checkpoint(tmp_path):
    # Environment 1 raises at its 40th step; a checkpoint is written every 32 steps (16 per env).
    run_dir = tmp_path / "run"
    code = "import sys, faulty_envs; from ppokit.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["train", "--env", "PPOKitTest/RaiseAt40-v0", "--num-envs", "2", "--run-dir", str(run_dir)]
    args += ["--no-progress", "--no-eval", "--total-timesteps", "512"]
    for kv in ("vectorization=async", "n_steps=16", "batch_size=16", "n_epochs=1", "checkpoint_every=32"):
        args += ["--set", kv]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    first = err.strip().splitlines()[0]
    assert first.startswith("ppokit train: error: environment 1 raised RuntimeError: injected failure"), err
    assert "worker traceback of environment 1" in err and "injected failure" in err
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_000000000064"  # the step-64 checkpoint survives
    assert load_checkpoint(ckpt)[1]["num_timesteps"] == 64


def test_an_update_whose_steps_were_all_skipped_still_logs_every_loss_term():
    # Every minibatch step is NaN: the update logs the same keys as any other, with NaN values.
    NaNLoss.bad_steps = set(range(100))
    metrics = []
    model = NaNLoss("CartPole-v1", **SMALL, nonfinite_stop_after=1000)
    model.learn(16, callback=lambda m, x: metrics.append(x))
    assert metrics[0]["train/minibatch_steps"] == 0
    for key in ("train/policy_loss", "train/value_loss", "train/entropy", "train/loss", "train/approx_kl"):
        assert math.isnan(metrics[0][key]), key
    NaNLoss.bad_steps = set()
