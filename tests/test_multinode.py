"""Two torchrun "nodes" on localhost: the multi-node path (``--nnodes 2``, c10d rendezvous) at CI size.

tests/test_distributed.py covers ``torchrun --standalone`` (one node, two processes). Here two
separate torchrun agents, one process each, find each other through a c10d rendezvous on a free
local port, as two machines would through a shared endpoint (issue 17, goal 7).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ppokit.plotting import read_csv

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(script: list[str], cwd: Path, timeout: float = 240) -> list[str]:
    """Start two torchrun agents (nnodes 2, one process each, c10d rendezvous on localhost), wait
    for both, assert both exit 0; their outputs."""
    port = free_port()
    rdzv = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", f"ppokit-{port}"]
    procs = []
    for node in (0, 1):  # node 0 hosts the rendezvous store; torchrun assigns the ranks
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        cmd += [*rdzv, "--rdzv_conf", f"is_host={1 - node}", *script]
        procs.append(
            subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def test_two_nodes_train_one_run_with_both_nodes_steps(tmp_path):
    run = tmp_path / "run"
    outs = two_nodes(
        ["-m", "ppokit", "train", "--env", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4"]
        + ["--run-dir", str(run), "--no-progress", "--set", "n_steps=32", "--set", "batch_size=64"]
        + ["--set", "n_epochs=2", "--set", "eval_episodes=2", "--set", "checkpoint_every=512"]
        + ["--set", "tensorboard=false"],
        cwd=tmp_path,
    )
    # only the rank-0 process (on whichever node torchrun gave it) writes and reports the run
    assert sum("run directory:" in out for out in outs) == 1
    # each update counts both nodes' rollouts (2 x 4 envs x 32 steps); one node alone would count 128
    steps = read_csv(run / "metrics.csv")["time/total_timesteps"]
    assert steps == [256.0, 512.0, 768.0, 1024.0]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_000000000512", "step_000000001024"]
    assert (run / "model" / "manifest.json").exists() and (run / "eval.json").exists()
    assert not (tmp_path / "runs").exists()  # the other rank wrote no run directory of its own


def test_two_nodes_keep_identical_parameters(tmp_path):
    two_nodes([str(WORKER), "train", str(tmp_path)], cwd=tmp_path)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    params = [k for k in r0 if k.startswith("param.")]
    assert params and all(torch.equal(r0[k], r1[k]) for k in params)
    assert not torch.equal(r0["seen"], r1["seen"])  # each node stepped its own environments
    assert int(r0["num_timesteps"]) == int(r1["num_timesteps"]) == 3 * 64 * 2
