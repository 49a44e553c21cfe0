"""Chaos: real ``ppokit`` processes killed at random moments, with the DEFAULT config (only the checkpoint
interval shortened, through the config) - issue 16, group 1.

- ``train``: SIGKILL at a random moment after the first checkpoint; ``eval`` of the newest checkpoint
  prints a result; ``resume`` finishes.
- ``grpo`` and ``rlhf-ppo``: SIGKILL at a random moment; ``resume``; SIGTERM on the resumed run
  finishes the step, checkpoints it and exits 143; a second ``resume`` finishes. No step is lost
  beyond the last checkpoint and metrics rows are never repeated.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit.llm.checkpoint import list_lm_checkpoints
from ppokit.train.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
CHECKPOINT_OFTEN = ["--set", "checkpoint_every_seconds=0.5"]


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ppokit", *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for(cond, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def finish(proc: subprocess.Popen, timeout: float = 300.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    err = err.decode()
    assert "Traceback" not in err, err[-3000:]
    return proc.returncode, out.decode(), err


def lm_steps(run: Path) -> list[int]:
    return [int(p.name.split("_")[-1]) for p in list_lm_checkpoints(run / "checkpoints")]


def metric_steps(run: Path, column: str) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(float(r[column])) for r in csv.DictReader(f)]


def test_sigkill_during_train_then_eval_and_resume(tmp_path):
    rng = random.Random(os.getpid())
    run = tmp_path / "run"
    proc = start(
        "train", "--run-dir", str(run), "--no-progress", "--total-timesteps", "200000", *CHECKPOINT_OFTEN
    )
    wait_for(lambda: latest_checkpoint(run / "checkpoints") is not None, proc)
    time.sleep(rng.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = latest_checkpoint(run / "checkpoints")
    assert newest is not None
    code, out, err = finish(start("eval", str(run), "--episodes", "2", "--json"))
    assert code == 0 and "mean_return" in json.loads(out.strip().splitlines()[-1]), err
    step = int(newest.name.split("_")[-1])
    code, out, err = finish(start("resume", str(run), "--total-timesteps", str(step + 4096), "--no-progress"))
    assert code == 0, err
    steps = metric_steps(run, "time/total_timesteps")
    assert steps == sorted(set(steps)) and steps[-1] >= step + 4096  # no repeated rows, nothing missing


# The CI-sized variant: the default config but for a smaller tiny model, no warm start and a short
# evaluation (the default-config variant below takes ~6 min per verb on a busy 2-core machine).
SMALL_LM = [
    *("--set", "warm_start.steps=0", "--set", "eval_prompts=8", "--set", "prompts_per_step=4"),
    *("--set", "tiny_model.n_layer=1", "--set", "tiny_model.n_embd=16", "--set", "tiny_model.n_head=2"),
]


@pytest.mark.parametrize("verb", ["grpo", "rlhf-ppo"])
def test_sigkill_and_sigterm_during_an_lm_run(verb, tmp_path):
    sigkill_sigterm_resume(verb, tmp_path, SMALL_LM)


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["grpo", "rlhf-ppo"])
def test_sigkill_and_sigterm_during_an_lm_run_default_config_slow(verb, tmp_path):
    sigkill_sigterm_resume(verb, tmp_path, [])


def sigkill_sigterm_resume(verb: str, tmp_path: Path, extra: list[str]) -> None:
    """SIGKILL at a random moment after the first checkpoint, resume, SIGTERM once the resumed run
    checkpointed again (exit 143, a checkpoint at the step it stopped on), resume to the end."""
    rng = random.Random(os.getpid())
    run = tmp_path / "run"
    argv = [verb, "--run-dir", str(run), "--no-progress", "--max-steps", "400", *CHECKPOINT_OFTEN, *extra]
    proc = start(*argv)
    wait_for(lambda: bool(lm_steps(run)), proc, timeout=400)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = lm_steps(run)[-1]
    # resume; SIGTERM once it has checkpointed again: it finishes the step, checkpoints it, exits 143
    proc = start("resume", str(run), "--no-progress", "--max-steps", "400")
    wait_for(lambda: lm_steps(run)[-1] > killed_at, proc, timeout=400)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 143, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted_by"] == signal.SIGTERM and "interrupted by SIGTERM" in err
    stopped_at = lm_steps(run)[-1]
    assert stopped_at == summary["steps"] > killed_at  # the checkpoint is at the step it stopped on
    code, out, err = finish(start("resume", str(run), "--no-progress", "--max-steps", str(stopped_at + 2)))
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["steps"] == stopped_at + 2
    steps = metric_steps(run, "step")
    assert steps == sorted(set(steps)) and steps[-1] == stopped_at + 2  # one row per step, none repeated
