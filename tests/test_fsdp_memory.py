"""The fsdp_memory spec (benchmarks/specs/fsdp_memory.yaml, issue 31 point 6) at CI size: a 2-block model
with the character vocabulary, 2 ranks under torchrun (gloo, CPU), ddp and fsdp, one GRPO step each.

What can fail: a rank of fsdp must hold half of ddp's parameters, gradients, AdamW moments and
reference weights (the shards of the 2 ranks add up to ddp's whole tensors, byte for byte), only
fsdp's generation copy holds gathered weights while it samples, and the page is regenerated with a
row per run. Memory figures do not depend on load, so nothing here is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fsdp_holds_half_of_ddp_per_rank_at_two_ranks(tmp_path):
    out, page = tmp_path / "runs", tmp_path / "page.md"
    sets = [
        "options.ranks=[2]", "options.mmap_thresholds=[0]", "options.n_layer=2", "options.n_embd=64",
        "options.n_head=2",
        "options.char_vocab=true", f"options.out={out}", f"options.page={page}",
    ]  # fmt: skip
    cmd = [sys.executable, "benchmarks/bench.py", "run", "specs/fsdp_memory.yaml"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp, fsdp = (json.loads((out / f"{s}-2.json").read_text()) for s in ("ddp", "fsdp"))
    assert [r["rank"] for r in fsdp["per_rank"]] == [0, 1]
    whole = ddp["per_rank"][0]
    assert all((r["params"], r["grads"]) == (whole["params"], whole["grads"]) for r in ddp["per_rank"])
    for key in ("params", "grads", "reference"):  # the two shards are the whole tensors, no more
        assert whole[key] > 0
        assert sum(r[key] for r in fsdp["per_rank"]) == whole[key], key
    for r in fsdp["per_rank"]:  # uneven shards (a dim-0 of odd length) and Adam's step scalars: +-10 %
        assert 0.4 < r["total"] / whole["total"] < 0.6, r
        assert r["gathered_bytes"] >= whole["params"]  # the whole weights exist while it samples
    assert whole["gathered_bytes"] == 0  # ddp samples with the policy itself
    text = page.read_text()
    assert "| ddp | 2 |" in text and "| fsdp | 2 |" in text and "torchrun --standalone" in text
