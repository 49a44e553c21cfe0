"""Data-parallel PPO on torch.distributed (gloo, 2 CPU processes launched with torchrun)."""

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


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    torchrun(2, str(WORKER), "train", str(out))
    return out, load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))


def test_ranks_hold_identical_parameters_after_training(two_rank_run):
    _, r0, r1 = two_rank_run
    params = [k for k in r0 if k.startswith("param.")]
    assert params
    for k in params:
        assert torch.equal(r0[k], r1[k]), k
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
    torchrun(
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

    torchrun(2, str(WORKER.with_name("dist_grpo_worker.py")), str(tmp_path), scale)
    r0, r1 = (load_file(str(tmp_path / f"grpo-rank{r}.safetensors")) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    p0, p1 = (json.loads((tmp_path / f"grpo-rank{r}.json").read_text())["prompts"] for r in (0, 1))
    assert len(p0) == len(p1) == 3 * 2 and not set(p0) & set(p1)  # disjoint shares of the prompts
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", "grpo-rank0.safetensors", "grpo-rank1.safetensors", "grpo-rank0.json", "grpo-rank1.json"]
    )
