"""The ppokit command: train a few hundred steps, eval --json, plot, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from ppokit.plotting import read_csv

PPOKIT = [sys.executable, "-m", "ppokit"]


def run(*args, cwd=None):
    return subprocess.run([*PPOKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_train_eval_plot(tmp_path):
    run_dir = tmp_path / "run"
    out = run(
        "train",
        "--total-timesteps",
        "512",
        "--num-envs",
        "4",
        "--seed",
        "2",
        "--run-dir",
        str(run_dir),
        "--set",
        "n_steps=32",
        "--set",
        "batch_size=64",
        "--set",
        "eval_episodes=3",
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    assert f"run directory: {run_dir}" in out.stdout and "evaluation (3 episodes" in out.stdout
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["n_steps"] == 32 and cfg["seed"] == 2 and cfg["env_id"] == "CartPole-v1"
    metrics = read_csv(run_dir / "metrics.csv")
    for key in (
        "rollout/ep_rew_mean",
        "train/policy_loss",
        "train/value_loss",
        "train/entropy",
        "train/approx_kl",
        "train/clip_fraction",
        "train/value_clipped_fraction",
        "train/explained_variance",
        "train/kl_coef",
        "time/fps",
        "time/total_timesteps",
        "time/elapsed_s",
    ):
        assert key in metrics, key
    assert metrics["time/total_timesteps"][-1] == 512
    assert any((run_dir / "tb").iterdir())

    out = run("eval", str(run_dir), "--episodes", "4", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # exactly one JSON object on stdout
    assert result["episodes"] == 4 and result["env_id"] == "CartPole-v1"
    assert {"mean_return", "std_return"} <= set(result)

    for png in ("returns.png", "losses.png"):
        (run_dir / "plots" / png).unlink()
    out = run("plot", str(run_dir))
    assert out.returncode == 0, out.stderr
    for png in ("returns.png", "losses.png"):
        assert (run_dir / "plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    for args in (
        ["eval", str(tmp_path / "missing")],
        ["train", "--set", "learning_rate=-1"],
        ["train", "--env", "NoSuchEnv-v0"],
        ["plot", str(tmp_path)],
    ):
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


def test_help_lists_every_option():
    for verb, options in {
        "train": ["--env", "--config", "--total-timesteps", "--seed", "--num-envs", "--run-dir", "--set"],
        "eval": ["--episodes", "--stochastic", "--json"],
        "plot": [],
        "resume": [],
    }.items():
        out = run(verb, "--help")
        assert out.returncode == 0
        for opt in options:
            assert opt in out.stdout, (verb, opt)


def test_tensorboard_events_hold_every_logged_scalar(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ppokit.tracking import Tracker

    tracker = Tracker(tmp_path)
    tracker.log(10, {"train/loss": 0.5, "rollout/ep_rew_mean": float("nan"), "time/fps": 100})
    tracker.log(20, {"train/loss": 0.25, "rollout/ep_rew_mean": 9.0, "time/fps": 200})
    tracker.close()
    acc = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert sorted(acc.Tags()["scalars"]) == ["rollout/ep_rew_mean", "time/fps", "train/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 0.5), (20, 0.25)]
    assert [(e.step, e.value) for e in acc.Scalars("rollout/ep_rew_mean")] == [(20, 9.0)]  # NaN skipped


def test_progress_without_a_terminal_prints_plain_lines():
    """Issue 30: with output to a pipe or file, rich drew nothing until the end; now a plain line
    every ``plain_every`` seconds and at the end, flushed."""
    import io

    from rich.console import Console

    from ppokit.tracking import ProgressBar

    out = io.StringIO()
    with ProgressBar(100, "PPO X", "return", plain_every=0.0, console=Console(file=out)) as bar:
        bar.update(50, 1.5)
        bar.update(100, 2.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("PPO X: 50/100 steps, ") and "return 1.50" in lines[0]
    assert lines[1].startswith("PPO X: 100/100 steps")
    quiet = io.StringIO()
    with ProgressBar(100, "PPO X", plain_every=3600.0, console=Console(file=quiet)) as bar:
        bar.update(50, 1.5)  # not yet due: nothing
    assert quiet.getvalue() == ""
