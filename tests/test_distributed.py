"""Data-parallel PPO on torch.distributed (gloo, 2 CPU processes launched with torchrun): the classic
Gymnasium path and the batched torch-env path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(nproc: int, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def two_ranks(out: Path, *args: str) -> tuple[Path, dict, dict]:
    """Run a worker on two ranks into ``out``: ``(out, rank 0's tensors, rank 1's tensors)``."""
    torchrun(2, *args)
    return out, load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))


def assert_same_parameters(r0: dict, r1: dict) -> None:
    params = [k for k in r0 if k.startswith("param.")]
    assert params
    for k in params:
        assert torch.equal(r0[k], r1[k]), k


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return two_ranks(out, str(WORKER), "train", str(out))


def test_ranks_hold_identical_parameters_after_training(two_rank_run):
    _, r0, r1 = two_rank_run
    assert_same_parameters(r0, r1)
    # the ranks saw different data (own seeds), so identical parameters come from the gradient averaging
    assert not torch.equal(r0["seen"], r1["seen"])
    assert int(r0["num_timesteps"]) == 3 * 64 * 2  # total_timesteps counts both ranks' steps


def test_merged_normalizer_equals_statistics_of_all_ranks_data(two_rank_run):
    _, r0, r1 = two_rank_run
    all_obs = torch.cat([r0["seen"], r1["seen"]]).numpy()
    for r in (r0, r1):
        # the statistics start from a prior of count 1e-4 (mean 0, var 1), hence the tolerance
        assert np.allclose(r["rms.mean"].numpy(), all_obs.mean(0), atol=1e-5)
        assert np.allclose(r["rms.var"].numpy(), all_obs.var(0), rtol=1e-4, atol=1e-5)
        assert abs(float(r["rms.count"]) - len(all_obs)) < 1e-3


def test_only_rank_zero_writes_the_run_directory(two_rank_run):
    out, _, _ = two_rank_run
    assert (out / "run" / "metrics.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["rank0.safetensors", "rank1.safetensors", "run"]


def test_cli_under_torchrun_makes_one_run_directory(tmp_path):
    out = torchrun(
        2,
        "-m",
        "ppokit",
        "train",
        "--total-timesteps",
        "512",
        "--num-envs",
        "4",
        "--no-progress",
        "--set",
        "n_steps=32",
        "--set",
        "batch_size=64",
        "--set",
        "eval_episodes=2",
        cwd=tmp_path,
    )
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model" / "manifest.json").exists()
    # issue 31: each rank says once where it trains and with which backend
    for rank in (0, 1):
        assert out.stderr.count(f"ppokit ppo: rank {rank} of 2 on cpu (gloo)\n") == 1, out.stderr


def test_two_ranks_with_batch_b_match_one_rank_with_batch_2b(tmp_path):
    torchrun(2, str(WORKER), "grad", str(tmp_path))
    torchrun(1, str(WORKER), "grad", str(tmp_path))
    one = load_file(str(tmp_path / "grad1-rank0.safetensors"))
    for rank in (0, 1):
        two = load_file(str(tmp_path / f"grad2-rank{rank}.safetensors"))
        for k in one:
            assert torch.allclose(one[k], two[k], atol=1e-6, rtol=1e-5), k


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_grpo_two_ranks_shard_prompts_and_stay_identical(tmp_path, scale):
    import json

    out = torchrun(2, str(WORKER.with_name("dist_grpo_worker.py")), str(tmp_path), scale)
    # issue 31: the config's device is the default, auto; each rank says once where it trains
    for rank in (0, 1):
        assert out.stderr.count(f"ppokit grpo: rank {rank} of 2 on cpu (gloo, ddp)\n") == 1, out.stderr
    r0, r1 = (load_file(str(tmp_path / f"grpo-rank{r}.safetensors")) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    p0, p1 = (json.loads((tmp_path / f"grpo-rank{r}.json").read_text())["prompts"] for r in (0, 1))
    assert len(p0) == len(p1) == 3 * 2 and not set(p0) & set(p1)  # disjoint shares of the prompts
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", "grpo-rank0.safetensors", "grpo-rank1.safetensors", "grpo-rank0.json", "grpo-rank1.json"]
    )


# -- the batched torch-env path (issue 32 item 3): each rank steps its own ppokit/CartPoleTorch-v0 ----------
BATCHED_WORKER = WORKER.with_name("dist_batched_worker.py")
STEPS_PER_RANK = 3 * 16 * 8  # 3 rollouts of 8 steps of 16 instances (dist_batched_worker.SMALL)


@pytest.fixture(scope="module")
def two_rank_batched_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_batched")
    return two_ranks(out, str(BATCHED_WORKER), str(out))


def test_batched_ranks_step_their_own_envs_and_hold_identical_parameters(two_rank_batched_run):
    _, r0, r1 = two_rank_batched_run
    assert_same_parameters(r0, r1)
    # each rank's envs were reset with its own seed, so identical parameters come from the averaging
    assert r0["seen"].shape == r1["seen"].shape and not torch.equal(r0["seen"], r1["seen"])
    assert int(r0["num_timesteps"]) == int(r1["num_timesteps"]) == 2 * STEPS_PER_RANK


def test_batched_device_normalisers_hold_the_statistics_of_every_ranks_data(two_rank_batched_run):
    _, r0, r1 = two_rank_batched_run
    all_obs = torch.cat([r0["seen"], r1["seen"]])
    for r in (r0, r1):  # the prior (count 1e-4, mean 0, var 1) explains the tolerance
        torch.testing.assert_close(r["rms.mean"], all_obs.mean(0), atol=1e-5, rtol=0)
        torch.testing.assert_close(r["rms.var"], all_obs.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
        assert abs(float(r["rms.count"]) - len(all_obs)) < 1e-3
    # the reward scaler's return statistics are merged too: one return per instance and step, all ranks
    assert float(r0["reward_rms.count"]) == float(r1["reward_rms.count"])
    assert abs(float(r0["reward_rms.count"]) - 2 * STEPS_PER_RANK) < 1e-3


def test_batched_only_rank_zero_writes_the_run_directory(two_rank_batched_run):
    out, _, _ = two_rank_batched_run
    assert (out / "run" / "metrics.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["rank0.safetensors", "rank1.safetensors", "run"]


def test_batched_cli_under_torchrun_trains_a_torch_env_into_one_run_directory(tmp_path):
    out = torchrun(
        2, "-m", "ppokit", "train", "--env", "ppokit/PendulumTorch-v0", "--total-timesteps", "1024",
        "--num-envs", "16", "--no-progress", "--device", "auto", "--set", "n_steps=16",
        "--set", "batch_size=128", "--set", "eval_episodes=2", "--set", "normalize_obs=true", cwd=tmp_path,
    )  # fmt: skip
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model" / "manifest.json").exists()
    # issue 31: each rank says once where it trains (device auto and its backend)
    for rank in (0, 1):
        assert out.stderr.count(f"ppokit ppo: rank {rank} of 2 on cpu (gloo)\n") == 1, out.stderr


def test_batched_resume_under_torchrun_keeps_each_ranks_own_envs(two_rank_batched_run, tmp_path):
    import shutil

    out, _, _ = two_rank_batched_run
    shutil.copytree(out / "run", tmp_path / "run")
    torchrun(2, str(BATCHED_WORKER), str(tmp_path), "resume")
    r0, r1 = (load_file(str(tmp_path / f"resumed-rank{r}.safetensors")) for r in (0, 1))
    # rank 0 continues its envs exactly; rank 1 keeps the envs it was seeded with (restoring rank 0's
    # envs and generators there would make both ranks collect the same rollout)
    assert bool(r0["env_state_restored"]) and not bool(r1["env_state_restored"])
    assert r0["seen"].shape == (16 * 8, 4) and not torch.equal(r0["seen"], r1["seen"])
    for k in (k for k in r0 if k.startswith("param.")):
        assert torch.equal(r0[k], r1[k]), k
    assert int(r0["num_timesteps"]) == 2 * STEPS_PER_RANK + 2 * 16 * 8


def test_batched_two_ranks_with_batch_b_match_one_rank_with_batch_2b(tmp_path):
    torchrun(2, str(BATCHED_WORKER), str(tmp_path), "grad")
    torchrun(1, str(BATCHED_WORKER), str(tmp_path), "grad")
    one = load_file(str(tmp_path / "grad1-rank0.safetensors"))
    assert any(k.startswith("critic_body") for k in one)  # the asymmetric actor-critic, Beta actions
    assert all(float(one[k].abs().sum()) > 0 for k in one if k.startswith(("actor_head", "critic_head")))
    for rank in (0, 1):
        two = load_file(str(tmp_path / f"grad2-rank{rank}.safetensors"))
        for k in one:
            assert torch.allclose(one[k], two[k], atol=1e-6, rtol=1e-5), k
