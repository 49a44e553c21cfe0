"""One writer per run directory: a second process (or object) gets a one-line error, and a killed
holder never leaves the lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ppokit.errors import ConfigError, RunDirError
from ppokit.rl.ppo import PPO
from ppokit.train.rundir import RunDirLock

SMALL = dict(num_envs=2, n_steps=8, batch_size=16, n_epochs=1, tensorboard=False)


def test_a_second_writer_of_one_run_directory_is_refused(tmp_path):
    a = PPO("CartPole-v1", run_dir=tmp_path, **SMALL)
    with pytest.raises(RunDirError, match=rf"in use by another ppokit process \(pid {os.getpid()}\)"):
        PPO("CartPole-v1", run_dir=tmp_path, **SMALL)
    a.learn(16)
    a.close()
    # released by close(); the directory now holds a run: a new model is refused (issue 29: it
    # overwrote the run's CSVs), resuming it is the way on
    with pytest.raises(
        ConfigError, match=r"already holds a run; use `PPO.resume\(.*\)` or choose another run_dir"
    ):
        PPO("CartPole-v1", run_dir=tmp_path, **SMALL)
    b = PPO.resume(tmp_path)
    assert b.num_timesteps == 16 and b.run_dir == tmp_path
    b.close()


def test_a_killed_holder_leaves_no_lock(tmp_path):
    code = f"from ppokit.train.rundir import RunDirLock; lock = RunDirLock({str(tmp_path)!r})"
    code += "; print('held', flush=True)"
    child = subprocess.Popen(
        [sys.executable, "-c", code + "; import time; time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert child.stdout.readline().strip() == b"held"
    with pytest.raises(RunDirError, match=rf"pid {child.pid}"):
        RunDirLock(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.time() + 5
    while True:
        try:
            RunDirLock(tmp_path).release()
            break
        except RunDirError:
            assert time.time() < deadline
            time.sleep(0.05)


def _claim_in_child(run: str, seed: int, start, done, results) -> None:
    """One of two processes claiming ``run`` at the same moment (``start`` is a barrier). The winner
    writes a metrics row, waits until the loser has finished failing (``done``), then checks that
    its lock, config and metrics are still there: a loser must never remove what it did not create."""
    from pathlib import Path

    from ppokit.config import ConfigError
    from ppokit.train.rundir import claim

    start.wait()
    try:
        claimed = claim(Path(run), "x", f"seed: {seed}\n", f"ppokit resume {run}")
    except (RunDirError, ConfigError) as e:
        done.wait()
        results.put((seed, "lost", str(e).splitlines()[0]))
        return
    (claimed.path / "metrics.csv").write_text(f"seed\n{seed}\n")
    done.wait()
    intact = all((claimed.path / name).is_file() for name in (".lock", "config.yaml", "metrics.csv"))
    ours = (claimed.path / "config.yaml").read_text() == f"seed: {seed}\n"
    results.put((seed, "won" if intact and ours else "won, then lost its files", ""))
    claimed.lock.release()


def test_two_processes_claiming_one_run_directory_50_times(tmp_path):
    """Issue 29: two starts on one --run-dir could both fail, the loser's rmtree removing the winner's
    lock, config and metrics (1 run in 3 of test_reliability_cli's two-process test). 50 rounds of
    two processes released at one moment onto the real ``claim``: exactly one wins each time, keeps
    all its files, and the loser gets the one-line refusal."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(50):
        run = tmp_path / f"run{round_}"
        start, done, results = ctx.Barrier(2), ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_claim_in_child, args=(str(run), s, start, done, results)) for s in (1, 2)
        ]
        for p in procs:
            p.start()
        outcome = sorted(results.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        assert sorted(o[1] for o in outcome) == ["lost", "won"], (round_, outcome)
        loser_message = next(o[2] for o in outcome if o[1] == "lost")
        assert "in use by another ppokit process" in loser_message or "already holds a run" in loser_message
        winner = next(o[0] for o in outcome if o[1] == "won")
        assert (run / "config.yaml").read_text() == f"seed: {winner}\n"
        assert (run / "metrics.csv").read_text() == f"seed\n{winner}\n"


def test_a_symlinked_lock_is_refused(tmp_path):
    """Issue 34: ``.lock`` as a symbolic link would have had ppokit truncate and write its pid into
    the file it points to; it is refused with a one-line error and the target is left alone."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(RunDirError, match=r"\.lock' is a symbolic link; ppokit refuses to lock through it"):
        RunDirLock(run)
    assert target.read_text() == "keep me\n"
