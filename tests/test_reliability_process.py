"""Processes that die or are stopped lose nothing; long runs keep their memory flat.

- SIGKILL at random moments, many times: the newest checkpoint always loads completely, or is
  ignored in favour of the previous complete one (a training process, and a pure writer loop).
- SIGINT/SIGTERM: a checkpoint at the next update boundary, a clean exit, an exact resume.
- Many updates, and many create/learn/close cycles: no growing memory, tensors, threads, files or
  child processes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
import torch

from ppokit.cli import main
from ppokit.rl.config import PPOConfig
from ppokit.rl.ppo import PPO
from ppokit.train.checkpoint import is_complete, latest_checkpoint, load_checkpoint, save_checkpoint

SMALL = dict(num_envs=4, n_steps=8, batch_size=32, n_epochs=1, tensorboard=False)
ROLLOUT = 32
FORK = multiprocessing.get_context("fork")  # a forked child needs no second `import torch`


# -- SIGKILL at random moments ----------------------------------------------------------------------


def _train_until_killed(run_dir: str) -> None:
    """Resume the run if it has a checkpoint (else start it) and train with a checkpoint per update."""
    torch.set_num_threads(1)
    if latest_checkpoint(Path(run_dir) / "checkpoints") is not None:
        model = PPO.resume(run_dir)
    else:
        # The previous child may have been killed after it claimed the directory (config.yaml, maybe
        # a metrics row) and before its first checkpoint: PPO(run_dir=) refuses a directory holding a
        # run (issue 29), and nothing in it is worth keeping, so start the run again from nothing.
        shutil.rmtree(run_dir, ignore_errors=True)
        model = PPO("CartPole-v1", run_dir=run_dir, **SMALL, checkpoint_every=ROLLOUT, keep_checkpoints=2)
    model.learn(10**9)


def _write_until_killed(root: str, start: int) -> None:
    """Write checkpoints back to back; each holds its own step number everywhere."""
    for step in range(start, 10**9):
        tensors = {"w": torch.full((256, 1024), float(step)), "b": torch.arange(step % 1000 + 1.0)}
        save_checkpoint(root, f"step_{step:012d}", tensors, {"step": step}, keep=2)


def _kill_at_random(target, args, rng: random.Random, low: float, high: float) -> None:
    proc = FORK.Process(target=target, args=args, daemon=True)
    proc.start()
    time.sleep(rng.uniform(low, high))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL  # it was still running: killed, not finished or crashed


def _check_checkpoints(root: Path) -> tuple[Path | None, int]:
    """The invariant after any kill: every visible checkpoint is complete; the newest loads."""
    names = [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    assert all(is_complete(p) for p in names), [p.name for p in names if not is_complete(p)]
    leftovers = sum(p.name.startswith(".tmp-") for p in root.iterdir()) if root.is_dir() else 0
    newest = latest_checkpoint(root)
    if newest is not None:
        load_checkpoint(newest)  # complete and readable, or it raises
    return newest, leftovers


def _kill_training_repeatedly(tmp_path: Path, kills: int, seed: int) -> None:
    # Warm up here: the forked children inherit the imports and caches a first PPO pays for.
    PPO("CartPole-v1", run_dir=tmp_path.parent / "warm-up", **SMALL, checkpoint_every=ROLLOUT).learn(ROLLOUT)
    rng, steps = random.Random(seed), []
    for _ in range(kills):
        _kill_at_random(_train_until_killed, (str(tmp_path),), rng, 0.2, 0.8)
        newest, _ = _check_checkpoints(tmp_path / "checkpoints")
        if newest is not None:
            resumed = PPO.resume(newest, run_dir=None)  # restores completely, env state included
            assert resumed.resume_info["env_state_restored"]
            steps.append(resumed.num_timesteps)
            resumed.close()
    assert steps and steps[-1] > ROLLOUT  # runs resumed from checkpoints and made progress
    assert steps == sorted(steps)  # never fell back behind an earlier complete checkpoint


def _kill_writer_repeatedly(tmp_path: Path, kills: int, seed: int) -> None:
    save_checkpoint(tmp_path.parent / "warm-up", "w", {"w": torch.zeros(2)}, {})  # lazy inits, in the parent
    rng, interrupted, start = random.Random(seed), 0, 0
    for _ in range(kills):
        _kill_at_random(_write_until_killed, (str(tmp_path), start), rng, 0.05, 0.3)
        newest, leftovers = _check_checkpoints(tmp_path)
        interrupted += leftovers > 0
        if newest is not None:
            tensors, meta = load_checkpoint(newest)
            step = meta["step"]  # tensors and metadata come from one and the same write
            assert newest.name == f"step_{step:012d}" and torch.all(tensors["w"] == step)
            start = step + 1
    assert interrupted > 0  # some kills did land in the middle of a write


def test_sigkill_during_training_never_leaves_a_broken_newest_checkpoint(tmp_path):
    _kill_training_repeatedly(tmp_path / "run", kills=6, seed=0)
    _kill_writer_repeatedly(tmp_path / "writer", kills=12, seed=1)


@pytest.mark.slow
def test_sigkill_many_times_slow(tmp_path):
    _kill_training_repeatedly(tmp_path / "run", kills=60, seed=2)
    _kill_writer_repeatedly(tmp_path / "writer", kills=200, seed=3)


# -- SIGINT / SIGTERM -------------------------------------------------------------------------------

TRAIN = [
    "--no-progress",
    "--no-eval",
    "--total-timesteps",
    str(8 * ROLLOUT),
    "--num-envs",
    "4",
    "--seed",
    "5",
]
SETS = ["n_steps=8", "batch_size=16", "n_epochs=2", "tensorboard=false", "normalize_obs=true"]
TRAIN += [arg for kv in SETS for arg in ("--set", kv)]


def _signal_at_update(monkeypatch, update: int, signals: list[int]) -> None:
    """Send ``signals`` to this process in the middle of the ``update``-th update (like a Ctrl-C)."""
    original = PPO.update

    def update_then_signal(self, clip_range):
        if self.num_updates + 1 == update:
            for s in signals:
                os.kill(os.getpid(), s)
        return original(self, clip_range)

    monkeypatch.setattr(PPO, "update", update_then_signal)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_update_boundary_and_resume_is_exact(tmp_path, monkeypatch, capsys, sig):
    run = tmp_path / "run"
    _signal_at_update(monkeypatch, 3, [sig])
    assert main(["train", "--run-dir", str(run), *TRAIN]) == 128 + sig
    out = capsys.readouterr().out
    assert f"interrupted by {signal.Signals(sig).name} at step {3 * ROLLOUT}" in out
    assert latest_checkpoint(run / "checkpoints").name == f"step_{3 * ROLLOUT:012d}"
    monkeypatch.undo()
    assert main(["resume", str(run), "--no-progress", "--no-eval"]) == 0
    assert "environment state restored exactly" in capsys.readouterr().out
    cfg = PPOConfig.load_yaml(run / "config.yaml")
    reference = PPO(cfg.env_id, cfg).learn()
    final = PPO.load(run / "model")
    for a, b in zip(reference.policy.parameters(), final.policy.parameters()):
        assert torch.equal(a, b)


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _signal_at_update(monkeypatch, 3, [signal.SIGINT, signal.SIGINT])
    assert main(["train", "--run-dir", str(run), *TRAIN, "--set", f"checkpoint_every={2 * ROLLOUT}"]) == 130
    assert "stopped at once at step" in capsys.readouterr().out
    assert latest_checkpoint(run / "checkpoints").name == f"step_{2 * ROLLOUT:012d}"


@pytest.mark.parametrize(
    ("sig", "vectorization", "to_group"),
    [(signal.SIGTERM, "sync", False), (signal.SIGINT, "async", True)],
    ids=["SIGTERM-to-the-process", "Ctrl-C-to-the-group-with-async-workers"],
)
def test_a_real_training_process_stops_cleanly(tmp_path, sig, vectorization, to_group):
    # A terminal's Ctrl-C reaches the whole process group, async env workers included: they must
    # leave the stop to the main process, which checkpoints and then ends them.
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ppokit", "train", "--run-dir", str(run), *TRAIN[:-2]]
    args[args.index("--total-timesteps") + 1] = str(10**8)
    args += ["--set", f"vectorization={vectorization}"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120  # waiting for the first metrics row, not a timing assertion
    while not (run / "metrics.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) == (4 if vectorization == "async" else 0)
    os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    name = signal.Signals(sig).name
    assert "Traceback" not in err and f"interrupted by {name}" in out, err
    step = int(out.split(f"interrupted by {name} at step ")[1].split(";")[0])
    assert load_checkpoint(latest_checkpoint(run / "checkpoints"))[1]["num_timesteps"] == step
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


# -- memory stays flat ------------------------------------------------------------------------------


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_memory_stays_flat_over_many_updates(tmp_path):
    model = PPO(
        "CartPole-v1", run_dir=tmp_path, **{**SMALL, "tensorboard": True}, checkpoint_every=50 * ROLLOUT
    )
    model.learn(50 * ROLLOUT)  # warm-up: first-call allocations, caches, the TensorBoard writer
    tensors, objects, rss = _live_tensors(), len(gc.get_objects()), _rss_mb()
    model.learn(450 * ROLLOUT)
    assert _live_tensors() == tensors  # no tensor kept per update (in logs, metrics, buffers)
    assert len(gc.get_objects()) - objects < 300  # nothing retained per update (450 of them)
    assert _rss_mb() - rss < 25
    assert len(model.collector.episodes.recent) <= 100 and model.collector.episodes.new == []
    model.close()


def test_create_learn_close_cycles_do_not_leak(tmp_path):
    me = psutil.Process()

    def resources():
        gc.collect()
        return me.num_fds(), me.num_threads(), len(me.children(recursive=True)), _live_tensors()

    def cycle(i, vectorization):
        model = PPO("CartPole-v1", run_dir=tmp_path / str(i), **SMALL, vectorization=vectorization)
        model.learn(2 * ROLLOUT)
        model.close()

    for i in range(3):
        cycle(i, "async" if i == 2 else "sync")
    before, rss = resources(), _rss_mb()
    for i in range(3, 23):
        cycle(i, "async" if i % 5 == 0 else "sync")
    assert resources() == before  # file descriptors, threads, child processes, tensors
    assert _rss_mb() - rss < 25
