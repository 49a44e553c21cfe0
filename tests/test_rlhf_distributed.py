"""RLHFPPOTrainer under torchrun (gloo, 2 CPU processes): ranks share prompts out and stay identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_rlhf_worker.py")


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_two_ranks_train_on_disjoint_prompts_and_end_identical(tmp_path, value_model):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run(
        [*cmd, str(WORKER), str(tmp_path), value_model], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.st")) for r in (0, 1))
    assert any(k.startswith("head.") for k in r0)
    for k in r0:  # policy, value head, critic and the adapted kl_coef: all equal across ranks
        assert torch.equal(r0[k], r1[k]), k
    assert float(r0["kl_coef"][0]) != 0.05  # the adaptive rule moved it (with the ranks' mean KL)
    p0, p1 = (json.loads((tmp_path / f"rank{r}.json").read_text())["prompts"] for r in (0, 1))
    assert len(p0) == len(p1) == 3 * 4 and not set(p0) & set(p1)  # disjoint shares of the prompts
    assert (tmp_path / "run" / "metrics.csv").exists()
