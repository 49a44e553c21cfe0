"""The one benchmark runner (benchmarks/bench.py) and its specs: every spec loads, a bad one is one
error line, the ``speed`` kind end to end at a tiny budget (records, resumability, the table); the
issue-17 harness (benchmarks/side_by_side.py, specs/side_by_side.yaml): the report's ratios and verdicts
from made-up records, docs/benchmarks.md regenerated from the committed records, and the whole harness
at CI size (``--quick``, the ci plan). No timing is asserted.

The CI-size run includes Stable-Baselines3 when the peers venv (benchmarks/.peers) exists; without
it the SB3 jobs must be recorded as skipped and the report must say so, while every ppokit job
still has to run and be reported.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402
from bench_plan import CI, FULL  # noqa: E402
from report import write_report  # noqa: E402
from report_goals import Val, ratio, verdict  # noqa: E402

# PPOKIT_BENCH_PEERS=/nonexistent checks the path CI takes (no peers venv) on a machine that has one
PEERS_PY = Path(os.environ.get("PPOKIT_BENCH_PEERS", ROOT / "benchmarks" / ".peers" / "bin" / "python"))
NO_GPU = "not measured: no GPU machine was lent"


def test_ratios_carry_censoring_as_bounds():
    assert ratio(Val(6.0), Val(12.0)) == Val(0.5)
    assert ratio(Val(60.0), Val(420.0, ">")) == Val(60.0 / 420.0, "<")  # SB3 never got there
    assert ratio(Val(420.0, ">"), Val(100.0)) == Val(4.2, ">")  # ppokit never got there
    assert ratio(Val(420.0, ">"), Val(420.0, ">")) is None  # neither: unknown
    assert ratio(None, Val(1.0)) is None


def test_verdicts_count_only_decided_seeds():
    assert verdict([Val(0.1), Val(0.15), Val(0.3)], 0.2, at_most=True)[1] is True
    text, ok = verdict([Val(0.5), Val(0.6), Val(0.4)], 0.2, at_most=True)
    assert ok is False and "misses** by 2.50×" in text
    # an upper bound below the target decides "holds"; a bound above it decides nothing
    assert verdict([Val(0.1, "<")] * 3, 0.2, at_most=True)[1] is True
    assert verdict([Val(0.5, "<")] * 3, 0.2, at_most=True)[1] is None
    assert verdict([Val(0.5, ">")] * 3, 0.2, at_most=True)[1] is False
    assert verdict([None, None], 0.2, at_most=True)[1] is None
    assert verdict([Val(2.5), Val(3.5), Val(3.1)], 3.0, at_most=False)[1] is True
    assert verdict([], 3.0, at_most=False) == ("not measured", None)


def job(goal, group, label, seed, load, item="", x=None, library=None, **record) -> dict:
    library = library or ("ppokit" if label.startswith("ppokit") or label in ("auto", "1 thread") else "sb3")
    record = {"rc": 0, "foreign_cpu_cores": 0.0, "train_end_s": 10.0, **record}
    return dict(goal=goal, group=group, label=label, library=library, seed=seed, load=load, cmd=[], out="",
                item=item, x=x, est_s=0.0, needs=[], record=record)  # fmt: skip


def made_up_records() -> list[dict]:
    jobs = []
    for name, fps in (
        ("CartPole-v1-fast", {"idle": (40e3, 30e3), "load": (20e3, 30e3)}),
        ("Pendulum-v1", None),
    ):
        for load in ("idle", "load"):
            auto, one = fps[load] if fps else (5e3, 5e3)
            jobs.append(job("1", "threads", "auto", 0, load, name, fps=auto, torch_threads_seen=[1, 2]))
            jobs.append(job("1", "threads", "1 thread", 0, load, name, fps=one))
    # auto ran one thread (the same program as torch_threads 1): a 1.3x gap is noise, not a miss
    jobs.append(job("1", "threads", "auto", 0, "idle", "Acrobot-v1", fps=4e3, torch_threads_seen=[1]))
    jobs.append(job("1", "threads", "1 thread", 0, "idle", "Acrobot-v1", fps=5.2e3))
    cp = "CartPole-v1"
    for s, (pre, fast) in enumerate([(6, 2.0), (7, 2.2), (8, 2.4)]):
        jobs.append(job("2", "cartpole", "ppokit preset", s, "idle", cp, time_to_target=pre, fps=16e3))
        jobs.append(job("2", "cartpole", "ppokit fast preset", s, "idle", cp, time_to_target=fast, fps=7e4))
        jobs.append(job("2", "cartpole", "SB3 zoo-HP", s, "idle", cp, time_to_target=12.0, fps=6e3))
        jobs.append(
            job("2", "cartpole", "ppokit fast preset", s, "load", cp, time_to_target=None, train_end_s=5)
        )
        jobs.append(job("2", "cartpole", "SB3 zoo-HP", s, "load", cp, time_to_target=20.0, fps=5e3))
    curve = [[30.0, 1500.0, 400_000], [60.0, 3100.0, 800_000]]
    jobs.append(
        job("4", "mujoco", "ppokit fast preset", 0, "idle", "HalfCheetah-v5", eval_curve=curve, fps=13e3)
    )
    never = dict(eval_curve=[[400.0, 1800.0, 300_000]], train_end_s=420.0, capped=True)
    jobs.append(job("4", "mujoco", "SB3 zoo-HP", 0, "idle", "HalfCheetah-v5", **never))
    jobs.append(job("4", "mujoco", "ppokit preset", 0, "idle", "Hopper-v5", **never))
    jobs.append(job("4", "mujoco", "SB3 zoo-HP", 0, "idle", "Hopper-v5", **never))
    for x, a, b in ((1, 120.0, 100.0), (8, 400.0, 200.0)):
        jobs.append(job("5", "cnn-envs", "ppokit", 0, "idle", x=x, fps=a))
        jobs.append(job("5", "cnn-envs", "SB3 CnnPolicy", 0, "idle", x=x, fps=b, library="stable-baselines3"))
    return jobs


def test_report_states_each_goal_per_seed_median_and_verdict(tmp_path):
    meta = {"mode": "full", "plan": FULL, "goals": ["1", "2", "3", "4", "5"], "command": "python x.py",
            "started": "2026-11-29 00:00 UTC", "finished": "2026-11-29 01:00 UTC", "commit": "abc1234",
            "capabilities": {"peers:sb3": True}}  # fmt: skip
    (tmp_path / "records.json").write_text(json.dumps({"meta": meta, "jobs": made_up_records()}))
    md = tmp_path / "bench.md"
    write_report(tmp_path, md)
    text = md.read_text()
    assert "Not figures to quote" not in text and "commit abc1234" in text and "- Machine:" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    idle = rows["| 1. threads: training time, auto / 1 thread, every preset"].split(" | ")[2]
    assert idle.startswith("**holds**") and "noise where auto ran one thread: Acrobot-v1 1.30×" in idle
    assert (
        "slower in CartPole-v1-fast 1.50×"
        in rows["| 1. threads: training time, auto / 1 thread, every preset"]
    )
    preset = rows["| 2. CartPole seconds to 475, default `ppokit train` preset / SB3 zoo-HP"]
    assert "0.58×, per seed 0.50, 0.58, 0.67: **misses** by 2.92×" in preset
    fast = rows["| 2. CartPole seconds to 475, ppokit fast preset / SB3 zoo-HP"].split(" | ")
    assert "**holds**" in fast[2] and ">0.25, >0.25, >0.25" in fast[3] and "**misses**" in fast[3]
    assert (
        "2.67×, per seed 2.67, 2.67, 2.67: **misses** by 1.12×"
        in rows["| 3. CartPole steps/s, same hyperparameters, ppokit / SB3"]
    )
    cheetah = rows["| 4. HalfCheetah-v5 seconds to target, ppokit fast preset / SB3 zoo-HP"]
    assert "per seed <0.14: **holds**" in cheetah
    assert "**cannot tell**" in rows["| 4. Hopper-v5 seconds to target, ppokit preset / SB3 zoo-HP"]
    assert "1.20–2.00×" in rows["| 5. Pong CNN steps/s against num_envs, ppokit / SB3 (range over points)"]
    assert (
        rows["| 6. GPU"].count(NO_GPU) == 2
        and rows["| 7. torchrun scale-out 1/2/4/8 processes"].count(NO_GPU) == 2
    )
    assert "not reached within 420 s" in text and "3,100 (60 s)" in text
    assert (tmp_path / "benchmarks" / "eval_vs_time.png").exists()
    assert (tmp_path / "benchmarks" / "cnn_growth.png").exists()


@pytest.mark.timeout(600)  # 2-core dev machine, others using 1.3 cores: ~65 s; ~100 s with the peers
def test_harness_ci_plan_end_to_end(tmp_path, capsys, monkeypatch):
    import side_by_side

    md = tmp_path / "bench.md"
    options = {"quick": True, "out": str(tmp_path), "md": str(md), "peers": str(PEERS_PY)}
    spec = bench.load_spec(
        ROOT / "benchmarks" / "specs" / "side_by_side.yaml", [f"options={json.dumps(options)}"]
    )
    bench.run(spec)
    run = next(tmp_path.glob("bench-*"))
    jobs = json.loads((run / "records.json").read_text())["jobs"]
    have_peers = PEERS_PY.exists()
    ppokit = [j for j in jobs if j["library"] == "ppokit"]
    assert {j["goal"] for j in ppokit} == {"1", "2", "4", "5"}
    for j in ppokit:
        assert j["record"].get("rc") == 0, (j["label"], j["record"])
        assert j["record"]["fps"] > 0 and j["record"]["total_timesteps"] > 0
    for j in jobs:  # the busy loop ran beside the load runs only
        if "skipped" in j["record"]:
            continue
        if j["load"] == "load":
            assert j["record"]["busy_loop_pid"] and j["record"]["busy_loop_cores"] > 0.1
        else:
            assert j["record"]["busy_loop_pid"] is None and j["record"]["busy_loop_cores"] == 0.0
    assert {j["load"] for j in ppokit if j["goal"] == "1"} == {"idle", "load"}
    cheetah = next(j["record"] for j in ppokit if j["goal"] == "4")
    assert cheetah["eval_curve"] and (cheetah["capped"] or cheetah["total_timesteps"] == CI["mujoco_steps"])
    assert all(j["record"]["eval_curve"] for j in ppokit if j["goal"] == "2")
    sb3 = [j for j in jobs if j["library"] == "stable-baselines3"]
    assert {j["goal"] for j in sb3} == {"2", "4", "5"}
    cleanrl = [j for j in jobs if j["library"] == "cleanrl-style"]  # goal 4's continuous single file
    assert [j["item"] for j in cleanrl] == ["HalfCheetah-v5"]
    if have_peers:
        assert all(j["record"].get("rc") == 0 for j in sb3 + cleanrl), [j["record"] for j in sb3 + cleanrl]
        assert cleanrl[0]["record"]["eval_curve"] and cleanrl[0]["record"]["total_timesteps"] >= 2048
    else:
        assert all("peers:sb3" in j["record"]["skipped"] for j in sb3)
        assert "peers:mujoco" in cleanrl[0]["record"]["skipped"]

    text = md.read_text()
    assert "Not figures to quote" in text and "(ci plan)" in text
    for goal in range(1, 8):
        assert f"## Goal {goal}:" in text
    assert text.count(NO_GPU) >= 4
    assert "| CartPole-v1 | 512 |" in text  # goal 1's row for the CI preset
    assert ("SB3 not run" in text and "not installed: peers:sb3" in text) or have_peers
    assert (tmp_path / "benchmarks" / "eval_vs_time.png").exists()

    capsys.readouterr()
    side_by_side.main(["--resume", str(run)])  # everything finished: nothing runs again
    assert "] goal" not in capsys.readouterr().out
    again = json.loads((run / "records.json").read_text())["jobs"]
    assert [j["record"] for j in again] == [j["record"] for j in jobs]
    # more of the same run: a second goal-4 seed's runs are the only new jobs, the old records are kept
    side_by_side.main(["--resume", str(run), "--mujoco-seeds", "2", "--mujoco-loads", "idle", "--dry-run"])
    out = capsys.readouterr().out
    retried = sum(1 for j in jobs if j["record"].get("rc") != 0)  # skipped ones (no peers) get another try
    assert f"{3 + retried} of {len(jobs) + 3} jobs to run" in out, out
    assert out.count(" s1 idle") == 3 and "HalfCheetah-v5" in out

    # a resume that changes the plan: a run it no longer has keeps its record and its command as run
    ran = []
    fake = {"rc": 1, "process_wall_s": 0.0, "busy_loop_cores": 0.0, "foreign_cpu_cores": 0.0}
    monkeypatch.setattr(
        side_by_side, "run_job", lambda job, *_: ran.append(job) or setattr(job, "record", fake)
    )
    monkeypatch.setattr(side_by_side, "write_report", lambda *a: None)
    records = json.loads((run / "records.json").read_text())  # as if an earlier start had used --load-pid
    earlier = {
        "external_loads": [{"pid": 1, "desc": "an earlier load", "from": "then"}],
        "external_pauses": [[1.0, 2.0]],
    }
    records["meta"].update(earlier)
    (run / "records.json").write_text(json.dumps(records))
    side_by_side.main(["--resume", str(run), "--mujoco-presets", "HalfCheetah-v5", "--mujoco-cap-s", "9"])
    meta = json.loads((run / "records.json").read_text())["meta"]
    assert {k: meta.get(k) for k in earlier} == earlier  # kept by a resume
    assert [j.label for j in ran] == ["ppokit preset"] and "9" in ran[0].cmd
    after = json.loads((run / "records.json").read_text())["jobs"]
    fast = [j for j in after if j["label"] == "ppokit fast preset" and j["group"] == "mujoco"]
    assert len(fast) == 1 and fast[0]["record"] == cheetah and "6" in fast[0]["cmd"]


def test_resume_options_replace_the_first_starts():
    """A resume's plan options replace the first start's values, so the command names each once."""
    from side_by_side import split_options

    argv = ["--no-install", "--mujoco-presets", "A", "B", "--mujoco-cap-s", "300", "--mujoco-seeds", "3"]
    picked, rest = split_options(argv, {"--mujoco-presets", "--mujoco-seeds"})
    assert picked == ["--mujoco-presets", "A", "B", "--mujoco-seeds", "3"]
    assert rest == ["--no-install", "--mujoco-cap-s", "300"]
    assert split_options(argv, set()) == ([], argv)


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_external_load_is_paused_for_idle_runs_and_left_running():
    import subprocess
    import time

    from common import BusyLoop

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        load = BusyLoop(external=proc.pid)
        load.start()  # a load run first: the process already runs, nothing to do
        assert load.pid == proc.pid and load.paused == []
        load.stop()  # an idle run: the load is stopped
        time.sleep(0.2)
        assert proc_state(proc.pid) == "T" and load.pid is None and len(load.paused[0]) == 1
        load.stop()  # still stopped: no second pause recorded
        assert len(load.paused) == 1
        load.start()
        time.sleep(0.2)
        assert proc_state(proc.pid) in "SR" and load.pid == proc.pid and len(load.paused[0]) == 2
        load.stop()
        load.release()  # the harness ends: the user's process goes on
        time.sleep(0.2)
        assert proc_state(proc.pid) in "SR" and proc.poll() is None and len(load.paused) == 2
    finally:
        proc.kill()
        proc.wait()


def test_pong_curve_clock_adds_up_over_resumes_and_leaves_out_pauses(tmp_path):
    """benchmarks/pong_curve.py: each `ppokit resume` restarts time/elapsed_s at 0, so the curve's
    clock adds the processes up; SIGSTOP pauses before a checkpoint was written are left out."""
    from pong_curve import elapsed_at, paused_between

    # killed at 2,400 steps after 24 s, resumed from its checkpoint at 2,000: the redone work counts
    rows = [(1000, 10.0), (2000, 20.0), (2400, 24.0), (3000, 8.0), (4000, 18.0)]
    metrics = [{"time/total_timesteps": str(s), "time/elapsed_s": str(t)} for s, t in rows]
    assert elapsed_at(metrics, 500) is None
    assert elapsed_at(metrics, 2000) == 20.0
    assert elapsed_at(metrics, 3000) == 24.0 + 8.0
    assert elapsed_at(metrics, 4000) == 24.0 + 18.0
    pauses = [[100.0, 110.0], [200.0, 230.0], [300.0]]  # the last one still stopped
    assert paused_between(pauses, 105.0, 250.0) == 5.0 + 30.0
    assert paused_between(pauses, 0.0, 320.0) == 10.0 + 30.0 + 20.0


SPECS = sorted((ROOT / "benchmarks" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_loads_and_names_a_study_that_runs(path):
    spec = bench.load_spec(path)
    assert spec["title"] and spec["kind"] in bench.KINDS
    if spec["kind"] != "speed":
        module = __import__(spec["kind"])
        assert callable(module.main)  # the study's entry point the runner calls with the spec's options
        assert (ROOT / "benchmarks" / f"{spec['kind']}.py").exists()
    if "page" in spec:
        assert (ROOT / spec["page"]).exists(), spec["page"]


def test_a_bad_spec_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: sweeep\ntitle: x\n")
    assert bench.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kind 'sweeep' is not one of speed, suite" in err[0]
    assert bench.main(["run", str(SPECS[0]), "--set", "repeats"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    bad.write_text("kind: speed\ntitle: x\ncontestants: {}\n")
    assert bench.main(["list", str(bad)]) == 2
    assert "kind speed needs repeats, workloads" in capsys.readouterr().err
    assert bench.main(["run", "specs/speed-issue29.yaml", "--set", "repeats=0"]) == 2
    assert "repeats=0: a whole number >= 1" in capsys.readouterr().err
    assert bench.main(["list", "specs/speed-issue29.yaml", "--set", "workloads.CartPole-v1={steps: 5}"]) == 2
    assert (
        "workloads.CartPole-v1={'steps': 5}: give train and steps, or grpo_steps" in capsys.readouterr().err
    )
    assert bench.argv_of({"seeds": [0, 1], "quick": True, "no_report": False, "out": "x"}, ["a"]) == [
        "a", "--seeds", "0", "1", "--quick", "--out", "x",
    ]  # fmt: skip


@pytest.mark.timeout(600)
def test_speed_spec_runs_interleaved_resumes_and_reports(tmp_path, capsys):
    """Issue 29's speed spec at a tiny budget, this tree against itself: one record per run in the
    spec's order (A, B, A, B), finished runs skipped, and the table of medians."""
    import speed

    out = tmp_path / "speed"
    spec = bench.load_spec(
        ROOT / "benchmarks" / "specs" / "speed-issue29.yaml",
        [f"contestants.before.pythonpath={ROOT / 'src'}", f"out={out}", "repeats=2"]
        + ["workloads={CartPole-v1: {train: CartPole-v1, steps: 1024}}"],
    )
    bench.run(spec)
    printed = capsys.readouterr().out
    order = [line.split("] ")[1].split(" idle")[0] for line in printed.splitlines() if line.startswith("[")]
    assert order == ["CartPole-v1 before", "CartPole-v1 after"] * 2
    records = sorted(out.rglob("rep*.json"))
    assert [p.relative_to(out).as_posix() for p in records] == [
        "CartPole-v1/after/idle/rep0.json", "CartPole-v1/after/idle/rep1.json",
        "CartPole-v1/before/idle/rep0.json", "CartPole-v1/before/idle/rep1.json",
    ]  # fmt: skip
    for path in records:
        r = json.loads(path.read_text())
        assert r["steps_per_s"] > 0 and r["steps"] >= 1024 and r["wall_s"] > 0 and r["load"] == "idle"
        for key in ("machine", "versions", "date", "library_commit", "harness_commit", "command"):
            assert r[key], key
        assert r["command"].startswith(f"PYTHONPATH={ROOT / 'src'} ppokit train --env CartPole-v1")
    stamps = [p.stat().st_mtime_ns for p in records]
    bench.run(spec)  # everything finished: nothing runs again, the report is rewritten
    assert "steps/s," not in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in records] == stamps
    (out / "CartPole-v1" / "after" / "idle" / "rep1.json").unlink()  # an interrupted spec resumes
    bench.run(spec)
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(again) == 1 and again[0].startswith("[4/4] CartPole-v1 after idle rep 1: ")
    text = (out / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| CartPole-v1 | idle |")]
    assert [row.split(" | ")[2:4] for row in rows] == [["before", "2"], ["after", "2"]]
    assert rows[0].split(" | ")[6] == "1.000" and float(rows[1].split(" | ")[6]) > 0
    assert "Machine: " in text and speed.report(spec, out).count("| CartPole-v1 |") == 2


def test_speed_workload_overrides_and_return_column(tmp_path):
    """A workload's own --set overrides follow the contestant's (issue 33's num_envs sweep), and
    ``returns: true`` adds the median of the runs' last mean return (made-up records)."""
    import speed

    workload = {"train": "CartPole-v1", "steps": 64, "set": ["num_envs=2"]}
    cmd = speed.command(workload, {"pythonpath": ROOT / "src", "set": ["env_backend=envpool"]}, tmp_path)
    assert cmd[-4:] == ["--set", "env_backend=envpool", "--set", "num_envs=2"]
    spec = {"title": "t", "contestants": {"a": {"pythonpath": "src"}}, "workloads": {"w": workload}}
    for rep, ret in enumerate([10.0, 30.0, float("nan")]):
        record = {"contestant": "a", "steps_per_s": 100.0, "wall_s": 1.0, "cpu_s": 1.0, "ep_rew_mean": ret}
        path = speed.path_of(tmp_path, "w", "a", "idle", rep)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**record, "library_commit": "x", "machine": "m", "versions": "v"}))
    assert "return" not in speed.report(spec, tmp_path)
    text = speed.report({**spec, "returns": True}, tmp_path)
    rows = [r for r in text.splitlines() if r.startswith("| w |")]
    assert rows[0].endswith("| 20.0 |")  # the median of the runs that finished an episode


def test_benchmarks_page_regenerates_from_the_committed_records(tmp_path):
    """docs/benchmarks.md is what the report generator makes of the committed records, to the byte."""
    from report import write_report

    spec = bench.load_spec(ROOT / "benchmarks" / "specs" / "side_by_side.yaml")
    records = ROOT / spec["report"]["report_only"]
    docs = tmp_path / "docs"
    (docs / "benchmarks").mkdir(parents=True)
    shutil.copy(records, docs / "benchmarks" / records.name)
    write_report(records, docs / "benchmarks.md")
    assert (docs / "benchmarks.md").read_text() == (ROOT / spec["page"]).read_text()


def test_step_overhead_spec_runs_a_tiny_study_and_reports_it(tmp_path, capsys):
    """specs/step_overhead.yaml (issue 33) at a tiny budget: one record per env and contestant, with the
    split and the load, and the table of the page (no timing is asserted)."""
    spec = bench.load_spec(
        ROOT / "benchmarks" / "specs" / "step_overhead.yaml",
        ["options.envs=[CartPole-v1]", "options.steps=64", "options.repeats=1", f"options.out={tmp_path}"],
    )
    bench.run(spec)
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert record["env"] == "CartPole-v1" and record["contestant"] == "this"
    assert record["gym_us"] > 0 and record["rollout_us"] > 0
    assert set(record["split_us"]) == {"act", "env", "norm", "rest"} and record["split_us"]["env"] > 0
    assert {"load_before", "load_after", "machine", "versions", "library_commit"} <= set(record)
    table = capsys.readouterr().out
    assert "| CartPole-v1 | this |" in table and "rollout / gym" in table
