"""ppokit against Stable-Baselines3 (and CleanRL when it runs) on the same machine, side by side.

    make bench                                     # = .venv/bin/python benchmarks/side_by_side.py
    python benchmarks/side_by_side.py --quick      # 1 seed, small budgets: a smoke test of the harness
    python benchmarks/side_by_side.py --groups cartpole --seeds 0 1 2
    python benchmarks/side_by_side.py --report-only benchmarks/out/bench-YYYYmmdd-HHMMSS

What runs (each a separate process, every library timed the same way, as docs/benchmarks.md
explains): for every seed in turn, one run of every contestant, so a change in machine load over
the session touches all of them alike.

- ``cartpole``: ppokit's CartPole preset, ppokit with rl-baselines3-zoo's hyperparameters (skipped
  when the preset *is* those), ppokit's fast preset, SB3 with the zoo's hyperparameters, SB3 with
  its defaults (1 env), and a CleanRL-style single-file PPO written by us (CleanRL's own ``ppo.py``
  does not run here; the harness re-checks and reports why).
- ``halfcheetah``: ppokit's HalfCheetah preset, ppokit with SB3's default hyperparameters, and SB3
  with its defaults, all for the same number of steps.
- ``growth``: steps/s of ppokit and SB3 against ``num_envs`` (1 to 1024, CartPole) and against the
  hidden width, on the first seed only (throughput, not learning).

Results land in ``benchmarks/out/bench-<stamp>/`` (``records.json`` plus each run's files) and
``docs/benchmarks.md`` + ``docs/benchmarks/*.png`` are written from them by ``report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from common import OUT, ROOT, git_commit
from parse import parse_run
from peers_setup import check_cleanrl, ensure_peers
from report import write_report

BENCH = ROOT / "benchmarks"
PPOKIT_PY = sys.executable  # make bench runs this file with ppokit's own venv

# rl-baselines3-zoo hyperparams/ppo.yml, entry CartPole-v1, written as a ppokit config.
ZOO_CARTPOLE = {
    "env_id": "CartPole-v1",
    "num_envs": 8,
    "total_timesteps": 100_000,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "learning_rate": 1e-3,
    "lr_schedule": "linear",
    "clip_range": 0.2,
    "clip_range_schedule": "linear",
    "ent_coef": 0.0,
}

# SB3 PPO's defaults (n_steps 2048, batch 64, 10 epochs, 64-64 tanh, 1 env); every other ppokit
# default already is SB3's (lr 3e-4, gamma 0.99, lambda 0.95, clip 0.2, Adam eps 1e-5, grad norm 0.5).
SB3_DEFAULTS_CHEETAH = {
    "env_id": "HalfCheetah-v5",
    "num_envs": 1,
    "n_steps": 2048,
    "batch_size": 64,
    "n_epochs": 10,
}

# Step budgets and sweep points; --quick makes a smoke test that exercises every code path.
PLANS = {
    "full": {
        "cartpole_steps": None,  # each contestant's own budget: the zoo's 100k, the presets' own,
        "cleanrl_steps": 500_000,  # and CleanRL ppo.py's default 500k
        "cartpole_ckpt": 10_000,
        "cheetah_steps": 100_000,
        "cheetah_ckpt": 25_000,
        "num_envs": [1, 4, 16, 64, 256, 1024],
        "widths": [64, 128, 256, 512],
        "growth_min_steps": 8192,
        "growth_min_updates": 5,
        "timeout_s": 1200,
    },
    "quick": {
        "cartpole_steps": 20_000,
        "cleanrl_steps": 20_000,
        "cartpole_ckpt": 10_000,
        "cheetah_steps": 4_096,
        "cheetah_ckpt": 2_048,
        "num_envs": [1, 64, 1024],
        "widths": [64, 256],
        "growth_min_steps": 2048,
        "growth_min_updates": 2,
        "timeout_s": 600,
    },
}


@dataclass
class Job:
    """One benchmark process: what it is, the command, and where its files land."""

    group: str  # cartpole | halfcheetah | growth-envs | growth-width
    label: str  # the contestant, as shown in tables and plots
    library: str
    seed: int
    cmd: list[str]
    out: str  # run directory of this job
    x: int | None = None  # the swept value (num_envs or width) for growth jobs
    record: dict = field(default_factory=dict)


def ppokit_job(group: str, label: str, seed: int, out: Path, args: list[str], x: int | None = None) -> Job:
    cmd = [PPOKIT_PY, str(BENCH / "ppokit_run.py"), "--seed", str(seed), "--run-dir", str(out)]
    return Job(group, label, "ppokit", seed, cmd + ["--no-progress", *args], str(out), x)


def sb3_job(
    peers_py: Path, group: str, label: str, seed: int, out: Path, args: list[str], x: int | None = None
) -> Job:
    cmd = [str(peers_py), str(BENCH / "peers" / "sb3_run.py"), "--seed", str(seed), "--out", str(out)]
    return Job(group, label, "stable-baselines3", seed, cmd + args, str(out), x)


def cartpole_jobs(plan: dict, seed: int, run: Path, peers_py: Path, zoo_yaml: Path) -> list[Job]:
    """Every CartPole contestant for one seed."""
    ckpt, d = plan["cartpole_ckpt"], run / "cartpole"
    budget = lambda own: str(own if plan["cartpole_steps"] is None else plan["cartpole_steps"])
    curve = ["--set", f"checkpoint_every={ckpt}", "--set", "keep_checkpoints=100000"]
    preset = yaml.safe_load((ROOT / "configs" / "CartPole-v1.yaml").read_text())
    ppokit_runs = [("ppokit preset", "preset", ["--env", "CartPole-v1"], budget(preset["total_timesteps"]))]
    if {k: v for k, v in preset.items() if k != "seed"} != ZOO_CARTPOLE:  # else the preset row is it
        zoo_steps = budget(ZOO_CARTPOLE["total_timesteps"])
        ppokit_runs.append(("ppokit zoo-HP", "zoo", ["--config", str(zoo_yaml)], zoo_steps))
    fast = ROOT / "configs" / "CartPole-v1-fast.yaml"
    if fast.exists():  # its own budget even in --quick: seconds, and the smoke test covers a solved run
        fast_steps = str(yaml.safe_load(fast.read_text())["total_timesteps"])
        ppokit_runs.append(("ppokit fast preset", "fast", ["--config", str(fast)], fast_steps))
    jobs = [
        ppokit_job(
            "cartpole", label, seed, d / f"ppokit-{tag}-s{seed}", [*src, "--total-timesteps", steps, *curve]
        )
        for label, tag, src, steps in ppokit_runs
    ]
    sb3_args = ["--checkpoint-every", str(ckpt), "--total-timesteps", budget(100_000)]
    for label, hparams in (("SB3 zoo-HP", "zoo"), ("SB3 defaults", "defaults")):
        out = d / f"sb3-{hparams}-s{seed}"
        jobs.append(sb3_job(peers_py, "cartpole", label, seed, out, ["--hparams", hparams, *sb3_args]))
    out, steps = d / f"cleanrl-style-s{seed}", plan["cleanrl_steps"]
    cmd = [
        str(peers_py),
        str(BENCH / "peers" / "cleanrl_style_ppo.py"),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    cmd += ["--total-timesteps", str(steps), "--checkpoint-every", str(steps // 10)]
    jobs.append(Job("cartpole", "CleanRL-style (ours)", "cleanrl-style (ours)", seed, cmd, str(out)))
    return jobs


def halfcheetah_jobs(plan: dict, seed: int, run: Path, peers_py: Path) -> list[Job]:
    """ppokit's HalfCheetah preset, ppokit with SB3's default hyperparameters (the same work as SB3,
    so the ratio of steps/s is the implementations' alone) and SB3's defaults, for the same steps."""
    steps, ckpt, d = plan["cheetah_steps"], plan["cheetah_ckpt"], run / "halfcheetah"
    sb3_defaults = run / "HalfCheetah-v5-sb3-defaults.yaml"
    sb3_defaults.write_text(yaml.safe_dump(SB3_DEFAULTS_CHEETAH, sort_keys=False))
    curve = ["--set", f"checkpoint_every={ckpt}", "--set", "keep_checkpoints=100000"]
    fast = ROOT / "configs" / "HalfCheetah-v5-fast.yaml"  # the wall-clock preset, for goal 3
    fast_jobs = [
        ppokit_job(
            "halfcheetah",
            "ppokit fast preset",
            seed,
            d / f"ppokit-fast-s{seed}",
            ["--config", str(fast), "--total-timesteps", str(steps), *curve],
        )
    ]
    return fast_jobs * fast.exists() + [
        ppokit_job(
            "halfcheetah",
            "ppokit preset",
            seed,
            d / f"ppokit-preset-s{seed}",
            ["--env", "HalfCheetah-v5", "--total-timesteps", str(steps), *curve],
        ),
        ppokit_job(
            "halfcheetah",
            "ppokit SB3-defaults-HP",
            seed,
            d / f"ppokit-sb3defaults-s{seed}",
            ["--config", str(sb3_defaults), "--total-timesteps", str(steps), *curve],
        ),
        sb3_job(
            peers_py,
            "halfcheetah",
            "SB3 defaults",
            seed,
            d / f"sb3-defaults-s{seed}",
            ["--env", "HalfCheetah-v5", "--hparams", "defaults", "--total-timesteps", str(steps)]
            + ["--checkpoint-every", str(ckpt)],
        ),
    ]


def growth_jobs(plan: dict, seed: int, run: Path, peers_py: Path, zoo_yaml: Path) -> list[Job]:
    """Steps/s against num_envs and width: the zoo's CartPole settings (n_steps 32, 20 epochs, one
    minibatch of the whole rollout per epoch, as the zoo's 8 x 32 = 256 = batch_size) with one knob
    changed. Budgets: at least ``growth_min_updates`` updates and ``growth_min_steps`` steps."""

    def budget(rollout: int) -> int:
        return rollout * max(plan["growth_min_updates"], -(-plan["growth_min_steps"] // rollout))

    jobs, d = [], run / "growth"
    points = [("growth-envs", n, 64) for n in plan["num_envs"]] + [
        ("growth-width", 8, w) for w in plan["widths"]
    ]
    for group, n, width in points:
        x, rollout = (n if group == "growth-envs" else width), 32 * n
        steps = str(budget(rollout))
        name = f"{group}-{x}"
        ppokit_args = [
            "--config",
            str(zoo_yaml),
            "--no-eval",
            "--total-timesteps",
            steps,
            "--num-envs",
            str(n),
        ]
        ppokit_args += ["--set", f"batch_size={rollout}", "--set", f"network.hidden_sizes=[{width},{width}]"]
        jobs.append(ppokit_job(group, "ppokit", seed, d / f"ppokit-{name}", ppokit_args, x))
        sb3_args = ["--hparams", "zoo", "--eval-episodes", "0", "--total-timesteps", steps]
        sb3_args += ["--num-envs", str(n), "--batch-size", str(rollout), "--width", str(width)]
        jobs.append(sb3_job(peers_py, group, "SB3", seed, d / f"sb3-{name}", sb3_args, x))
    return jobs


def busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(job: Job, timeout_s: int) -> None:
    """Run one job; time it from just before launch (``BENCH_T0``) and measure the CPU that other
    processes used meanwhile (``other_cpu_cores``: average cores busy with anything but this job)."""
    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    busy0, mine0 = busy_seconds(), children_cpu()
    t0 = time.time()
    env = {**os.environ, "BENCH_T0": repr(t0), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        try:
            rc = subprocess.run(
                job.cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.time() - t0
    others = (busy_seconds() - busy0 - (children_cpu() - mine0)) / max(wall, 1e-9)
    job.record = {"rc": rc, "process_wall_s": wall, "other_cpu_cores": max(others, 0.0), "log": str(log)}
    if rc == 0:
        job.record.update(parse_run(job.library, out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Smoke test: 1 seed, small budgets.")
    p.add_argument("--seeds", nargs="*", type=int, help="Seeds (default 0 1 2; --quick: 0).")
    p.add_argument("--groups", nargs="*", default=["cartpole", "halfcheetah", "growth"])
    p.add_argument("--report-only", type=Path, help="Rewrite the report from this finished bench directory.")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to write.")
    args = p.parse_args()
    if args.report_only:
        write_report(args.report_only, args.md)
        return
    mode = "quick" if args.quick else "full"
    plan, seeds = PLANS[mode], args.seeds or ([0] if args.quick else [0, 1, 2])
    run = OUT / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True)
    peers_py = ensure_peers()
    cleanrl = check_cleanrl()
    zoo_yaml = run / "CartPole-v1-zoo.yaml"
    zoo_yaml.write_text(yaml.safe_dump(ZOO_CARTPOLE, sort_keys=False))

    jobs: list[Job] = []
    for seed in seeds:  # alternate: every contestant once per seed, then the next seed
        if "cartpole" in args.groups:
            jobs += cartpole_jobs(plan, seed, run, peers_py, zoo_yaml)
        if "halfcheetah" in args.groups:
            jobs += halfcheetah_jobs(plan, seed, run, peers_py)
    if "growth" in args.groups:
        jobs += growth_jobs(plan, seeds[0], run, peers_py, zoo_yaml)

    meta = {"mode": mode, "seeds": seeds, "groups": args.groups, "plan": plan, "cleanrl_check": cleanrl}
    meta["command"] = " ".join(["python benchmarks/side_by_side.py", *sys.argv[1:]])
    meta["started"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta["commit"] = git_commit()
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.group:12s} {job.label:22s} seed {job.seed} x={job.x}", flush=True)
        launch(job, plan["timeout_s"])
        r = job.record
        print(
            f"    rc={r['rc']} wall {r['process_wall_s']:.1f}s, steps/s {r.get('fps', float('nan')):.0f}, "
            f"time to 475 {r.get('time_to_target')}, eval {r.get('eval_mean')}, "
            f"other CPU {r['other_cpu_cores']:.2f} cores",
            flush=True,
        )
        (run / "records.json").write_text(
            json.dumps({"meta": meta, "jobs": [asdict(j) for j in jobs]}, indent=1)
        )
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (run / "records.json").write_text(json.dumps({"meta": meta, "jobs": [asdict(j) for j in jobs]}, indent=1))
    write_report(run, args.md)
    print(f"results: {run}\nreport: {args.md}")


if __name__ == "__main__":
    main()
