"""Issue 32's side-by-side study (benchmarks/batched_peers.py, specs/batched_peers.yaml and the GPU plan
specs/batched_peers_gpu.yaml) at CI size, through the one benchmark runner: a record per run, resumable,
the page with its tables, verdict and figure. No timing is asserted.

rsl_rl and skrl run when the peers venv (benchmarks/.peers) has them; without it (CI) their runs must
be recorded as not installed and the page must say so, while ppokit's runs still run and are reported.
``PPOKIT_BENCH_PEERS=/nonexistent`` checks that path on a machine that has the peers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import batched_peers  # noqa: E402
import batched_peers_report  # noqa: E402
import bench  # noqa: E402

PEERS_PY = Path(os.environ.get("PPOKIT_BENCH_PEERS", ROOT / "benchmarks" / ".peers" / "bin" / "python"))


def have(library: str) -> bool:
    return batched_peers.peer_ok(PEERS_PY, library)


def tiny(tmp_path: Path, **more) -> dict:
    """The CI-size options: 64 envs, 3 iterations a run, one seed."""
    return {
        "env": "pendulum", "device": "cpu", "threads": 1, "speed_envs": [64], "speed_iters": 3,
        "speed_min_steps": 1, "warmup_iters": 1, "curve_envs": 64, "curve_steps": 64 * 16 * 3, "seeds": [0],
        "target": -2000, "no_install": True, "peers": str(PEERS_PY), "out": str(tmp_path / "out"),
        "page": str(tmp_path / "docs" / "page.md"), **more,
    }  # fmt: skip


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_recorder_counts_finished_episodes_and_stops_at_the_budget():
    import torch

    rec = batched_peers.Recorder(num_envs=2, device="cpu", period=2, max_steps=8)
    rec.add(torch.ones(2), torch.tensor([False, False]))  # before start(): not counted
    rec.start()
    rec.add(torch.tensor([1.0, 2.0]), torch.tensor([False, True]))  # env 1 ends with 2
    rec.add(torch.tensor([1.0, 3.0]), torch.tensor([True, False]))  # env 0 ends with 1 + 1
    rec.add(torch.tensor([5.0, 1.0]), torch.tensor([False, True]))  # env 1 ends with 3 + 1
    with pytest.raises(batched_peers.Budget):
        rec.add(torch.tensor([0.0, 0.0]), torch.tensor([False, False]))  # 8 steps: the budget
    assert [r[0] for r in rec.rows] == [4, 8] and [r[3:] for r in rec.rows] == [[2, 4.0], [1, 4.0]]
    assert all(0 <= r[1] <= r[2] for r in rec.rows)
    # the return of the last >= 2 episodes (window 2): rollout 1 alone, then rollouts 1 and 2
    assert [c[2] for c in batched_peers_report.window_curve(rec.rows, 2)] == [2.0, 8.0 / 3.0]
    run = {"rows": rec.rows, "num_envs": 2, "env": "pendulum"}
    assert batched_peers_report.time_to(run, 2.5, {"pendulum": 0}) == (rec.rows[1][2], 8)
    assert batched_peers_report.time_to(run, 3.0, {"pendulum": 0}) is None
    # the first episodes (cut short by the random start) are left out: here the first 2 x 2 env steps
    assert batched_peers_report.time_to(run, 3.9, {"pendulum": 2}) == (rec.rows[1][2], 8)
    assert batched_peers_report.curve_of(run, {"pendulum": 2}) == [(8, rec.rows[1][2], 4.0)]


def test_plan_interleaves_the_libraries_and_rotates_their_order():
    a = batched_peers.parse_args(["--speed-envs", "256", "1024", "--seeds", "0", "1", "--compile", "both"])
    jobs = batched_peers.plan(a)
    first = [j["library"] for j in jobs if j["kind"] == "speed" and j["num_envs"] == 256]
    second = [j["library"] for j in jobs if j["kind"] == "speed" and j["num_envs"] == 1024]
    assert first == ["ppokit", "ppokit", "rsl_rl", "rsl_rl", "skrl"]  # compiled and not; skrl has no compile
    assert second == ["rsl_rl", "rsl_rl", "skrl", "ppokit", "ppokit"]
    assert len({j["name"] for j in jobs}) == len(jobs) == 4 * 5
    speed = {j["num_envs"]: j["steps"] for j in jobs if j["kind"] == "speed"}
    assert speed == {256: 300_000 // 4096 * 4096 + 4096, 1024: 19 * 16384}  # --speed-min-steps 300,000


@pytest.mark.timeout(900)  # 6 processes with the peers: 410 s at load 14 on the 2 shared cores; 2 without
def test_spec_at_ci_size_runs_resumes_and_reports(tmp_path, capsys):
    spec = bench.load_spec(
        ROOT / "benchmarks" / "specs" / "batched_peers.yaml", [f"options={json.dumps(tiny(tmp_path))}"]
    )
    bench.run(spec)
    recs = records(tmp_path / "out")
    assert sorted(recs) == sorted(
        f"{kind}-{lib}-cpu-n64-s0" for kind in ("speed", "curve") for lib in ("ppokit", "rsl_rl", "skrl")
    )
    for name, r in recs.items():
        if r["library"] == "ppokit" or have(r["library"]):
            assert r["rc"] == 0, (name, r.get("error"))
            assert r["steps_per_s"] > 0 and 0 < r["rollout_share"] < 1 and len(r["rows"]) == 3
            assert r["rows"][-1][0] == 3 * 64 * 16 and len(r["loadavg_before"]) == 3
            assert r["versions"].startswith("python ") and r["harness_commit"]
        else:
            assert r["skipped"].startswith("not installed: ") and "rc" not in r and "rows" not in r
    page = (tmp_path / "docs" / "page.md").read_text()
    assert "## Training steps/s against the number of envs" in page and "| 64 |" in page
    assert "## Return and wall-clock to a return of -2000 (64 envs)" in page
    assert (tmp_path / "docs" / "benchmarks" / "page.png").stat().st_size > 0
    if have("rsl_rl"):
        assert (
            "**Goal (ppokit ≥ 1.5× rsl_rl's steps/s at equal return): " in page and "not measured" not in page
        )
    else:  # never a pass without the peer: the verdict says it was not measured, the page names why
        assert "not measured** (a library did not run)" in page
        assert "- Not run: not installed: rsl-rl-lib" in page

    capsys.readouterr()
    bench.run(spec)  # resumable: finished runs are kept; only not-installed ones are tried again
    out = capsys.readouterr().out
    missing = sum(1 for r in recs.values() if "skipped" in r)
    assert f"{missing} of 6 runs to do" in out
    assert {k: v for k, v in records(tmp_path / "out").items() if "skipped" not in v} == {
        k: v for k, v in recs.items() if "skipped" not in v
    }


@pytest.mark.timeout(600)
def test_gpu_plan_dry_runs_on_cpu_with_compile(tmp_path):
    """The prepared GPU plan (specs/batched_peers_gpu.yaml: cuda, with and without torch.compile) runs
    on a CPU at a tiny budget: ppokit compiled and not (rsl_rl's compile is its own option)."""
    spec = bench.load_spec(ROOT / "benchmarks" / "specs" / "batched_peers_gpu.yaml")
    assert spec["options"]["device"] == "cuda" and spec["options"]["compile"] == "both"
    options = {**spec["options"], **tiny(tmp_path, libraries=["ppokit"], compile="both", seeds=[])}
    spec = bench.load_spec(
        ROOT / "benchmarks" / "specs" / "batched_peers_gpu.yaml", [f"options={json.dumps(options)}"]
    )
    bench.run(spec)
    recs = records(tmp_path / "out")
    assert sorted(recs) == ["speed-ppokit-compiled-cpu-n64-s0", "speed-ppokit-cpu-n64-s0"]
    assert all(r["rc"] == 0 and r["steps_per_s"] > 0 for r in recs.values()), recs
    assert "ppokit (compiled)" in (tmp_path / "docs" / "page.md").read_text()


def test_the_published_page_is_the_report_of_the_committed_records(tmp_path):
    """docs/benchmarks_batched.md regenerates from docs/benchmarks/batched_peers/ (the spec's report)."""
    spec = bench.load_spec(ROOT / "benchmarks" / "specs" / "batched_peers.yaml")
    argv = bench.argv_of({**spec["report"], "page": str(tmp_path / "page.md")})
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "batched_peers.py"), *argv], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    figure = lambda line: line.startswith("![")  # noqa: E731 - the figure's path is the page's own
    made = [x for x in (tmp_path / "page.md").read_text().splitlines() if not figure(x)]
    published = (ROOT / "docs" / "benchmarks_batched.md").read_text().splitlines()
    assert made == [x for x in published if not figure(x)]
    assert "![return against env steps and seconds](benchmarks/benchmarks_batched.png)" in published
    assert (ROOT / "docs" / "benchmarks" / "benchmarks_batched.png").exists()
