"""Run the preset suites over several seeds and write docs/results.md from the raw results.

    python benchmarks/bench.py run specs/suite.yaml --set options.suite=mujoco --set options.jobs=2
    python benchmarks/bench.py report specs/suite.yaml           # only regenerate docs/results.md

Each run is a subprocess `python -m ppokit train --config configs/PRESET.yaml --seed K --run-dir ...
--no-progress --no-eval` followed by `python -m ppokit eval RUN_DIR --json --episodes 10` (deterministic
actions, evaluation seed 10000). What is kept, under OUT/<suite>/<preset>/seed<K>/ (OUT defaults to
docs/results/): result.json (scores, wall-clock, command, date, commits, machine, versions, the
resolved config) and metrics.csv trimmed to steps, seconds and the training return. The full run
directory (checkpoints, TensorBoard) goes to benchmarks/out/suite-runs/, which git ignores.

Resumable: a run whose result.json exists is skipped, so the same command can be started again after
an interruption; an interrupted run continues from its newest checkpoint (`ppokit resume`, written
every 5 minutes by default) when it was started by the same command, else it starts over. `--jobs N`
runs N trainings at a time (one per core at most is sensible). `--pythonpath DIR` trains with the
library found in DIR (e.g. a worktree frozen at one commit, so edits made meanwhile cannot change a
long batch); its git commit goes in every result.
After the runs (or with `--report` alone) docs/results.md and the learning-curve plots are regenerated
from every result.json under OUT (see benchmarks/suite_report.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from common import ROOT, launch, provenance, save_json, today

SUITES = {
    "classic": ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1"],
    "box2d": ["LunarLander-v3", "LunarLanderContinuous-v3", "BipedalWalker-v3"],
    "mujoco": [
        "HalfCheetah-v5",
        "Hopper-v5",
        "Walker2d-v5",
        "Ant-v5",
        "Humanoid-v5",
        "Swimmer-v5",
        "InvertedPendulum-v5",
        "InvertedDoublePendulum-v5",
        "Reacher-v5",
    ],
}
PACKAGES = ("torch", "gymnasium", "mujoco", "box2d", "numpy")
CURVE_COLUMNS = ["time/total_timesteps", "time/elapsed_s", "rollout/ep_rew_mean"]
DEFAULT_OUT = ROOT / "docs" / "results"
SCRATCH = ROOT / "benchmarks" / "out" / "suite-runs"
_print_lock = threading.Lock()


def suite_of(preset: str) -> str:
    """The suite a preset belongs to (its env id without a `-fast`-style suffix is in SUITES)."""
    for suite, envs in SUITES.items():
        if any(preset == env or preset.startswith(env + "-") for env in envs):
            return suite
    return "other"


def stitched_rows(src: Path) -> tuple[list[dict], float]:
    """The rows of a run's metrics.csv as one run, and the seconds its earlier attempts contributed.

    A resumed run appends to metrics.csv, and its process's ``time/elapsed_s`` starts again near 0: a
    row whose seconds or steps go back starts a new attempt. The interrupted attempt's rows after its
    last checkpoint (steps at or past the first resumed row's) were lost work and are dropped, and the
    new attempt's seconds are shifted by the kept rows' last value."""
    with src.open() as f:
        rows = list(csv.DictReader(f))
    kept: list[dict] = []
    offset = last_elapsed = 0.0
    for row in rows:
        step, elapsed = float(row["time/total_timesteps"]), float(row["time/elapsed_s"])
        if kept and (elapsed < last_elapsed or step <= float(kept[-1]["time/total_timesteps"])):
            kept = [r for r in kept if float(r["time/total_timesteps"]) < step]
            offset = float(kept[-1]["time/elapsed_s"]) if kept else 0.0
        last_elapsed = elapsed
        kept.append({**row, "time/elapsed_s": str(elapsed + offset)})
    return kept, offset


def trim_metrics(src: Path, dst: Path, columns: list[str] = CURVE_COLUMNS) -> float:
    """Copy the learning-curve columns of a run's metrics.csv (steps, seconds, training return, and
    any ``columns`` a job adds), stitched across attempts; returns the earlier attempts' seconds."""
    rows, offset = stitched_rows(src)
    with dst.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
    return offset


def ppokit_cmd(*args: str) -> list[str]:
    """A `python -m ppokit ...` command line (run with ``launch(..., pythonpath=the library's src)``)."""
    return [sys.executable, "-m", "ppokit", *args]


def shown(cmd: list[str]) -> str:
    """A `python -m ppokit ...` command as the user would type it (`ppokit ...`, repo-relative paths)."""
    parts = [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT) + "/") else a for a in cmd[3:]]
    return " ".join(["ppokit", *parts])


def train_and_evaluate(job: dict, args: argparse.Namespace, run_dir: Path) -> dict:
    """`ppokit train` then `ppokit eval --json` in subprocesses; the commands, timings and evaluation."""
    budget = int(yaml.safe_load(job["config_path"].read_text())["total_timesteps"])
    sets = list(job.get("sets", []))
    if args.budget_scale != 1.0:
        sets.append(f"total_timesteps={max(1, int(budget * args.budget_scale))}")
    sets += args.set
    train_args = ["train", "--config", str(job["config_path"]), "--seed", str(job["seed"])]
    train_args += ["--run-dir", str(run_dir), "--no-progress", "--no-eval"]
    train_args += [a for s in sets for a in ("--set", s)]
    cmd = ppokit_cmd(*train_args)
    # an interrupted run of the same command continues from its newest checkpoint; anything else
    # found there (another command's run, one without a checkpoint) starts over
    started_by = run_dir.parent / "command.json"
    command = {"train": train_args, "pythonpath": str(args.pythonpath)}  # the same library, too
    recorded = json.loads(started_by.read_text()) if started_by.exists() else None
    if isinstance(recorded, list):  # written by 441161f, which kept the arguments alone
        recorded = {"train": recorded, "pythonpath": str(args.pythonpath)}
    same = recorded == command
    resumed = same and any((run_dir / "checkpoints").glob("step_*/manifest.json"))
    started_at = run_dir.parent / "started.json"
    first_started = json.loads(started_at.read_text()) if resumed and started_at.exists() else today()
    if resumed:
        resume_args = ["resume", str(run_dir), "--no-progress", "--no-eval"]
        first = shown(cmd)
        cmd = ppokit_cmd(*resume_args)
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    started_by.write_text(json.dumps(command))
    started_at.write_text(json.dumps(first_started))
    train = launch(cmd, pythonpath=args.pythonpath, check=True)
    ecmd = ppokit_cmd("eval", str(run_dir), "--json", "--episodes", str(args.eval_episodes))
    evaluation = launch(ecmd, pythonpath=args.pythonpath, check=True)
    return {
        "budget": budget,
        "evaluation": json.loads(evaluation.stdout.strip().splitlines()[-1]),
        "wall_s": train.wall_s,
        "eval_s": evaluation.wall_s,
        "started": first_started,
        "command": f"{first} (interrupted) && {shown(cmd)} && {shown(ecmd)}"
        if resumed
        else f"{shown(cmd)} && {shown(ecmd)}",
        "resumed": resumed,
    }


def run_one(job: dict, args: argparse.Namespace) -> dict | None:
    """Train, evaluate and record one (preset, seed); returns the result (None: skipped)."""
    dest: Path = job["dest"]
    result_path = dest / "result.json"
    if result_path.exists():
        return None
    run_dir = args.scratch / dest.relative_to(args.out) / "run"
    done = train_and_evaluate(job, args, run_dir)
    evaluation = done["evaluation"]
    dest.mkdir(parents=True, exist_ok=True)
    # a resumed run's wall-clock adds the kept work of its earlier attempts (their lost updates after
    # the last checkpoint are not counted)
    earlier = trim_metrics(run_dir / "metrics.csv", dest / "metrics.csv", job.get("columns", CURVE_COLUMNS))
    with (dest / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = {
        "suite": job["suite"],
        "preset": job["preset"],
        "env": resolved["env_id"],
        "seed": job["seed"],
        **job.get("extra", {}),
        "budget": done["budget"],
        "budget_scale": args.budget_scale,
        "steps": int(float(last["time/total_timesteps"])),
        "eval_mean": evaluation["mean_return"],
        "eval_std": evaluation["std_return"],
        "eval_episodes": evaluation["episodes"],
        "eval_returns": evaluation.get("returns"),
        "eval_deterministic": evaluation.get("deterministic", True),
        "eval_seed": evaluation.get("seed"),
        "train_s": float(last["time/elapsed_s"]),
        "wall_s": done["wall_s"] + earlier,
        "eval_s": done["eval_s"],
        "resumed": done["resumed"],
        "last_train_return": float(last["rollout/ep_rew_mean"]) if last["rollout/ep_rew_mean"] else None,
        "command": done["command"],
        "suite_command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "started": done["started"],
        **provenance(args.pythonpath, PACKAGES),  # date, machine, versions, harness and library commits
        "note": args.note,
        "config": resolved,
    }
    save_json(result_path, result)  # result.json appears only once complete: the resumability marker
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    for name in ("command.json", "started.json"):
        (run_dir.parent / name).unlink(missing_ok=True)
    return result


def plan(args: argparse.Namespace) -> list[dict]:
    """The (preset, seed) jobs the arguments ask for, in order."""
    presets = args.envs or [e for s in (SUITES if args.suite == "all" else [args.suite]) for e in SUITES[s]]
    jobs = []
    for preset in presets:
        config_path = args.configs / f"{preset}.yaml"
        if not config_path.exists():
            raise SystemExit(f"no preset {config_path}")
        suite = suite_of(preset)
        for seed in args.seeds:
            dest = args.out.resolve() / suite / preset / f"seed{seed}"
            jobs.append(
                {"preset": preset, "seed": seed, "suite": suite, "config_path": config_path, "dest": dest}
            )
    return jobs


def run_jobs(
    jobs: list[dict], args: argparse.Namespace, label=lambda j: f"{j['preset']} seed {j['seed']}"
) -> int:
    """Run the jobs, ``args.jobs`` at a time, printing one progress line per run; returns runs made."""
    total, made, t0 = len(jobs), [0], time.time()

    def one(i_job: tuple[int, dict]) -> None:
        i, job = i_job
        try:
            r = run_one(job, args)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            msg = f"FAILED ({type(e).__name__}: {e})"
        else:
            if r is None:
                msg = "skipped (result exists)"
            else:
                made[0] += 1
                score = f"{r['eval_mean']:.1f} ± {r['eval_std']:.1f}"
                msg = f"{score} after {r['steps']:,} steps in {r['wall_s']:.0f} s"
        with _print_lock:
            print(f"[{i + 1}/{total}] {label(job)}: {msg} (elapsed {time.time() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, enumerate(jobs)))
    return made[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=[*SUITES, "all"], default="classic", help="Suite to run.")
    p.add_argument("--envs", nargs="*", help="Presets to run instead of a whole suite (configs/<NAME>.yaml).")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="Seeds (default 0 1 2).")
    p.add_argument("--jobs", type=int, default=1, help="Runs at a time (at most one per core).")
    p.add_argument("--budget-scale", type=float, default=1.0, help="Multiply each preset's total_timesteps.")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="Config override for every run."
    )
    p.add_argument("--eval-episodes", type=int, default=10, help="Deterministic evaluation episodes (>= 10).")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Raw results folder (default docs/results).")
    p.add_argument("--configs", type=Path, default=ROOT / "configs", help="Folder of the presets.")
    p.add_argument(
        "--pythonpath", type=Path, default=ROOT / "src", help="src folder of the library to train with."
    )
    p.add_argument("--note", default="", help="A remark stored with every result (e.g. machine load).")
    p.add_argument("--report", action="store_true", help="Only regenerate the report from the raw results.")
    p.add_argument("--no-report", action="store_true", help="Do not regenerate the report after the runs.")
    p.add_argument("--markdown", type=Path, default=ROOT / "docs" / "results.md", help="Report to write.")
    p.add_argument(
        "--random-scores", action="store_true", help="Measure random-policy scores (OUT/random_scores.json)."
    )
    p.add_argument("--scratch", type=Path, default=SCRATCH, help="Where the full run directories go.")
    p.add_argument(
        "--keep-runs", action="store_true", help="Keep the full run directories in benchmarks/out/."
    )
    return p


def main(argv: list[str] | None = None, p: argparse.ArgumentParser | None = None, jobs_of=plan) -> None:
    """The command line (the module docstring); table1.py runs it with its parser and its jobs."""
    args = (p or parser()).parse_args(argv)
    args.out, args.pythonpath, args.scratch = (x.resolve() for x in (args.out, args.pythonpath, args.scratch))
    if args.random_scores:
        from suite_report import measure_random_scores

        measure_random_scores(args.out, [e for envs in SUITES.values() for e in envs])
    if not args.report and not args.random_scores:
        jobs = jobs_of(args)
        made = run_jobs(jobs, args)
        print(f"{made} new run(s), {len(jobs) - made} skipped or failed", flush=True)
    if not args.no_report:
        write_results(args.out, args.markdown)


def write_results(out: Path, markdown: Path) -> None:
    """docs/results.md (or ``markdown``) and its plots from every result under ``out``; README's
    summary table too when the page is the project's own docs/results.md."""
    from suite_report import write_report

    default = markdown.resolve() == (ROOT / "docs" / "results.md").resolve()
    write_report(out, markdown, ROOT / "README.md" if default else None)
    print(f"wrote {markdown}", flush=True)


if __name__ == "__main__":
    main()
