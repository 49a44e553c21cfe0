"""The suite and Table 1 specs (benchmarks/specs/suite.yaml, table1.yaml) run by the one runner
(benchmarks/bench.py) at CI size, their aggregate statistics, and docs/results.md regenerated from the
committed raw results."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from aggregate import iqm, normalise, stratified_bootstrap_ci  # noqa: E402
from bench import load_spec  # noqa: E402
from bench import run as run_spec  # noqa: E402


def spec_with(name: str, **options) -> dict:
    """A spec of benchmarks/specs/ with its options replaced (a CI-size run of the same study)."""
    return load_spec(ROOT / "benchmarks" / "specs" / name, [f"options={json.dumps(options)}"])


def test_iqm_is_the_mean_of_the_middle_half():
    # 8 scores: floor(8/4) = 2 dropped at each end, mean of 3, 4, 5, 6
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # 4 scores: one dropped at each end; the outlier 100 does not count
    assert iqm([100, 1, 2, 3]) == pytest.approx(2.5)
    # 3 scores: floor(3/4) = 0, so the plain mean (scipy.stats.trim_mean(x, 0.25) agrees)
    assert iqm([1, 2, 6]) == pytest.approx(3.0)


def test_normalise_maps_random_to_zero_and_reference_to_one():
    assert normalise(-200.0, random=-200.0, reference=-100.0) == pytest.approx(0.0)
    assert normalise(-100.0, random=-200.0, reference=-100.0) == pytest.approx(1.0)
    assert normalise(-50.0, random=-200.0, reference=-100.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="equals the random score"):
        normalise(1.0, random=3.0, reference=3.0)


def test_stratified_bootstrap_by_hand():
    # every task's runs are identical: every resample equals the data, so the interval is a point
    assert stratified_bootstrap_ci([[1, 1, 1], [2, 2, 2]]) == pytest.approx((1.5, 1.5, 1.5))
    # one task with runs 0 and 1 (IQM of 2 scores = their mean): a resample's mean is 0 with
    # probability 1/4, 0.5 with 1/2 and 1 with 1/4, so the 2.5 and 97.5 percentiles are 0 and 1
    assert stratified_bootstrap_ci([[0.0, 1.0]], reps=4000) == pytest.approx((0.5, 0.0, 1.0))
    # stratified: a task's runs are only ever drawn from that task. Task A = [0, 0], task B = [10, 10]:
    # every resample has two 0s and two 10s, IQM (middle two) = 5 always. Pooled resampling would not.
    assert stratified_bootstrap_ci([[0, 0], [10, 10]], reps=500) == pytest.approx((5.0, 5.0, 5.0))
    # a wider spread gives a wider interval around the point estimate
    rng = np.random.default_rng(1)
    point, low, high = stratified_bootstrap_ci([rng.normal(0, 1, 10), rng.normal(3, 1, 10)])
    assert low < point < high


@pytest.mark.timeout(300)  # ~36 s on the 2-core dev machine under load 4; slower when oversubscribed
def test_suite_command_smoke(tmp_path, capsys):
    """Two cheap envs x two seeds at tiny budgets: raw files, resumability, and the report."""
    from suite_report import measure_random_scores

    out, md = tmp_path / "results", tmp_path / "results.md"
    measure_random_scores(out, ["CartPole-v1", "Pendulum-v1"])
    spec = spec_with(
        "suite.yaml", envs=["CartPole-v1", "Pendulum-v1"], seeds=[0, 1], budget_scale=0.005, jobs=2,
        out=str(out), scratch=str(tmp_path / "runs"), markdown=str(md),
    )  # fmt: skip
    run_spec(spec)
    first = capsys.readouterr().out
    assert "4 new run(s)" in first
    assert first.count("CartPole-v1 seed") == 2 and first.count("Pendulum-v1 seed") == 2

    results = sorted(out.glob("classic/*/seed*/result.json"))
    assert [p.relative_to(out).as_posix() for p in results] == [
        "classic/CartPole-v1/seed0/result.json",
        "classic/CartPole-v1/seed1/result.json",
        "classic/Pendulum-v1/seed0/result.json",
        "classic/Pendulum-v1/seed1/result.json",
    ]
    for path in results:
        r = json.loads(path.read_text())
        for key in ("env", "seed", "steps", "eval_mean", "eval_std", "wall_s", "command", "date"):
            assert key in r, key
        for key in ("library_commit", "machine", "versions"):
            assert r[key], key
        assert r["eval_episodes"] == 10 and r["eval_deterministic"] and r["budget_scale"] == 0.005
        header = (path.parent / "metrics.csv").read_text().splitlines()[0]
        assert header == "time/total_timesteps,time/elapsed_s,rollout/ep_rew_mean"
    assert not list((tmp_path / "runs").rglob("model"))  # full run directories are not kept

    stamps = [p.stat().st_mtime_ns for p in results]
    run_spec(spec)
    second = capsys.readouterr().out
    assert "0 new run(s)" in second and second.count("skipped (result exists)") == 4
    assert [p.stat().st_mtime_ns for p in results] == stamps

    text = md.read_text()
    assert "| classic | CartPole-v1 (budget ×0.005) | 2 | 512 |" in text
    assert "| classic | Pendulum-v1 (budget ×0.005) | 2 |" in text
    assert "| classic | 2 | 4 |" in text  # the IQM row: 2 envs, 4 runs
    # the suite's presets without results are listed, not left out
    missing = "| classic | Acrobot-v1 | 0 | - | not run yet | - | -73.5 (zoo, 1M) | ≥ -80: not run yet | - |"
    assert missing in text
    assert "IQM of normalised score" in text and "Random policy:" in text
    assert (out / "classic_curves.png").stat().st_size > 1000


def test_table1_normalisation_by_hand():
    """Random = 0 and the best objective's mean over seeds = 1, per env; rows pool envs and seeds;
    an env where not all four objectives ran is shown raw but left out of the rows."""
    from table1 import complete_envs, normalised_rows

    def runs(*scores):
        return [{"last_train_return": s} for s in scores]

    found = {
        # env A: random 10; clip's mean 30 is the best -> (x - 10) / 20
        "A": {
            "clip": runs(20.0, 40.0),
            "none": runs(0.0, 10.0),
            "kl_adaptive": runs(15.0),
            "kl_penalty": runs(25.0),
        },
        # env B: random -100; kl_penalty's mean 0 is the best -> (x + 100) / 100
        "B": {
            "clip": runs(-50.0, -50.0),
            "kl_penalty": runs(0.0, 0.0),
            "none": runs(-100.0),
            "kl_adaptive": runs(-75.0),
        },
        "C": {"clip": runs(1.0)},  # no random score: left out
        "D": {"clip": runs(5.0), "none": runs(1.0)},  # two objectives only: "best = 1" would be clip's
    }
    rows, per_env = normalised_rows(found, {"A": {"mean": 10.0}, "B": {"mean": -100.0}, "D": {"mean": 0.0}})
    assert set(per_env) == {"A", "B", "D"} and complete_envs(found) == ["A", "B"]
    assert per_env["A"]["best"] == 30.0 and per_env["B"]["best"] == 0.0
    assert rows["clip"] == pytest.approx([0.5, 1.5, 0.5, 0.5])
    assert rows["none"] == pytest.approx([-0.5, 0.0, 0.0])
    assert rows["kl_adaptive"] == pytest.approx([0.25, 0.25])
    assert rows["kl_penalty"] == pytest.approx([0.75, 1.0, 1.0])
    assert per_env["A"]["scores"] == pytest.approx(
        {"clip": 1.0, "none": -0.25, "kl_adaptive": 0.25, "kl_penalty": 0.75}
    )
    assert "scores" not in per_env["D"]  # not all four objectives: no "best = 1"


def test_table1_objective_table_says_how_much_has_run(tmp_path):
    """README's Table 1 lines: the rows beside the paper's, the ordering, and how many runs so far."""
    from table1 import objective_table

    published = {"table1": {"rows": {"none": -0.39, "clip": 0.82, "kl_adaptive": 0.74, "kl_penalty": 0.71}}}
    (tmp_path / "random_scores.json").write_text(json.dumps({"envs": {"A": {"mean": 0.0}}}))
    assert "0 of the 84 runs so far" in objective_table(tmp_path / "table1", published)[-1]
    for obj, score in {"none": 10.0, "clip": 40.0, "kl_adaptive": 30.0, "kl_penalty": 20.0}.items():
        run = tmp_path / "table1" / "A" / obj / "seed0"
        run.mkdir(parents=True)
        r = {"env": "A", "objective": obj, "seed": 0, "last_train_return": score}
        (run / "result.json").write_text(json.dumps(r))
    text = "\n".join(objective_table(tmp_path / "table1", published))
    assert (
        "| Clipping, ε = 0.2 | 0.82 | 1.00 | 1 |" in text
        and "| No clipping or penalty | -0.39 | 0.25 | 1 |" in text
    )
    assert "ours clip > kl_adaptive > kl_penalty > none (the same)" in text
    assert "4 of the 84 runs so far; normalised over 1 of the paper's 7 envs (A), seeds 0." in text


def test_table1_says_where_the_ordering_differs():
    """An inverted pair is named with the envs that invert it, the order without the widest gap, and
    that env's largest update KL; rows far from the paper's are listed; a match says so."""
    from table1 import difference_lines

    paper = {"table1": {"rows": {"none": -0.39, "clip": 0.82, "kl_adaptive": 0.74, "kl_penalty": 0.71}}}

    def env(clip, kl_adaptive):  # random 0, best 1: the means are the normalised scores
        means = {"none": -0.4, "clip": clip, "kl_adaptive": kl_adaptive, "kl_penalty": 0.7}
        return {"means": means, "best": 1.0, "random": 0.0, "scores": means}

    per_env = {
        "A": env(0.2, 1.0),
        "B": env(0.9, 0.8),
        "C": {"means": {"clip": 5.0}, "best": 5.0, "random": 0.0},
    }
    text = "\n".join(difference_lines(per_env, paper, {("A", "clip"): [3.0, 12.5]}))
    assert "ours puts kl_adaptive (0.90) above clip (0.55)" in text
    assert "kl_adaptive scores higher (kl_adaptive vs clip): A 1.00 vs 0.20." in text
    assert "Without A, the widest gap: kl_adaptive 0.80, clip 0.90." in text
    assert "largest per-update KL of the clip runs was 12.5" in text
    assert "Clipping, ε = 0.2: ours 0.55, the paper 0.82 (-0.27)." in text and "No clipping" not in text
    per_env = {"A": env(0.82, 0.74)}
    assert difference_lines(per_env, paper, {}) == [
        "Ours matches the paper's ordering and its rows within 0.1."
    ]


@pytest.mark.timeout(300)
def test_table1_command_smoke(tmp_path, capsys):
    """The four objectives on one cheap env at a tiny budget: per-run files with the objectives'
    training columns, resumability, and the Table 1 section of the report."""
    from suite_report import measure_random_scores

    out, md = tmp_path / "results", tmp_path / "results.md"
    measure_random_scores(out, ["InvertedPendulum-v5"])
    spec = spec_with(
        "table1.yaml", envs=["InvertedPendulum-v5"], seeds=[0], budget_scale=0.002, jobs=2, out=str(out),
        markdown=str(md), pythonpath=str(ROOT / "src"), scratch=str(tmp_path / "runs"),
    )  # fmt: skip
    run_spec(spec)
    assert "4 new run(s)" in capsys.readouterr().out
    for obj in ("none", "clip", "kl_adaptive", "kl_penalty"):
        run = out / "table1" / "InvertedPendulum-v5" / obj / "seed0"
        r = json.loads((run / "result.json").read_text())
        assert r["objective"] == obj and r["config"]["objective"] == obj and r["steps"] == 2048
        header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
        assert header[3:] == ["train/kl_coef", "train/approx_kl", "train/clip_fraction", "train/entropy"]
    assert not list((tmp_path / "runs").rglob("model"))  # the training directories are not kept
    run_spec(spec)
    assert "0 new run(s)" in capsys.readouterr().out
    text = md.read_text()
    assert "4 of the 84 runs so far; normalised over 1 of the paper's 7 envs (InvertedPendulum-v5)" in text
    assert "Not the paper's budget" in text
    # the per-run diagnostics: beta is shown for the KL objectives only (the first update used beta = 1)
    assert re.search(
        r"\| InvertedPendulum-v5 \| kl_penalty \| 0 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| 1 \(1–1\) \|", text
    )
    assert re.search(r"\| InvertedPendulum-v5 \| clip \| 0 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| - \|", text)
    # every run has its own row with its command and commit, and its machine is named
    rows = [line for line in text.splitlines() if line.startswith("| InvertedPendulum-v5 | none | 0 | ")]
    row = rows[-1]  # the first is the diagnostics table's
    r = json.loads((out / "table1" / "InvertedPendulum-v5" / "none" / "seed0" / "result.json").read_text())
    assert f"`{r['command']}`" in row and r["library_commit"][:10] in row and r["date"] in row
    assert f"Machine: {r['machine']}; {r['versions']}" in text


@pytest.mark.timeout(300)
def test_suite_resumes_an_interrupted_run(tmp_path, capsys):
    """A run killed after a checkpoint continues from it when the same command is started again:
    one run's curve (lost rows dropped, seconds continued), marked resumed, the budget reached."""
    import os
    import signal
    import subprocess
    import time

    import suite

    out, scratch = tmp_path / "results", tmp_path / "runs"
    argv = ["--envs", "CartPole-v1", "--seeds", "0", "--set", "checkpoint_every=4096", "--no-report"]
    argv += ["--out", str(out), "--scratch", str(scratch), "--pythonpath", str(ROOT / "src")]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "suite.py"), *argv]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    checkpoints = scratch / "classic" / "CartPole-v1" / "seed0" / "run" / "checkpoints"
    deadline = time.time() + 200
    while len(list(checkpoints.glob("step_*/manifest.json"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the harness and its training subprocess, as a session end does
    proc.wait()
    result_path = out / "classic" / "CartPole-v1" / "seed0" / "result.json"
    assert not result_path.exists()

    suite.main(argv)
    assert "1 new run(s)" in capsys.readouterr().out
    r = json.loads(result_path.read_text())
    assert r["resumed"] is True and "(interrupted) && ppokit resume " in r["command"]
    assert r["steps"] >= 100_000 and r["eval_episodes"] == 10
    lines = (result_path.parent / "metrics.csv").read_text().splitlines()[1:]
    steps = [float(line.split(",")[0]) for line in lines]
    seconds = [float(line.split(",")[1]) for line in lines]
    assert steps == sorted(set(steps)) and steps[-1] == r["steps"]  # one run: no step twice
    assert seconds == sorted(seconds) and r["wall_s"] >= seconds[-1] - 1.0
    assert not (result_path.parent.parent / "seed0" / "command.json").exists()


def test_stitched_metrics_drop_lost_rows_and_continue_the_seconds(tmp_path):
    from suite import stitched_rows

    csv_path = tmp_path / "metrics.csv"
    # attempt 1 logged 100..300 and checkpointed at 200; attempt 2 resumed there (its clock restarts)
    rows = [(100, 1.0), (200, 2.0), (300, 3.0), (300, 0.5), (400, 1.5)]
    csv_path.write_text("time/total_timesteps,time/elapsed_s\n" + "".join(f"{a},{b}\n" for a, b in rows))
    kept, offset = stitched_rows(csv_path)
    assert [(float(r["time/total_timesteps"]), float(r["time/elapsed_s"])) for r in kept] == [
        (100, 1.0),
        (200, 2.0),
        (300, 2.5),
        (400, 3.5),
    ]
    assert offset == 2.0
    # killed right after a checkpoint: no row is lost, the clock going back alone marks the new attempt
    csv_path.write_text("time/total_timesteps,time/elapsed_s\n100,1.0\n200,2.0\n300,0.5\n")
    kept, offset = stitched_rows(csv_path)
    assert [float(r["time/elapsed_s"]) for r in kept] == [1.0, 2.0, 2.5] and offset == 2.0


def test_results_page_regenerates_from_the_committed_raw_results(tmp_path):
    """docs/results.md is what the report generator makes of docs/results/ (bar the date line)."""
    from suite_report import write_report

    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs" / "results", docs / "results")
    for name in ("results_recurrent_masking.md", "results_envs.md", "benchmarks_spine.md"):
        shutil.copy(ROOT / "docs" / name, docs / name)  # the "Other results" links need them there
    write_report(docs / "results", docs / "results.md")
    made = (docs / "results.md").read_text().splitlines()
    committed = (ROOT / "docs" / "results.md").read_text().splitlines()
    assert made[2].startswith("Generated by `python benchmarks/bench.py report specs/suite.yaml`")
    assert made[:2] + made[3:] == committed[:2] + committed[3:]
