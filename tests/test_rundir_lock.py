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
