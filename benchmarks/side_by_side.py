"""Issue 17 ("Performance, round two"): ppokit against Stable-Baselines3 on the same machine, idle
and under load, goal by goal; writes docs/benchmarks.md.

    make bench            # = python benchmarks/bench.py run specs/side_by_side.yaml (the published options)
    python benchmarks/bench.py run specs/side_by_side.yaml --set 'options={quick: true}'   # CI's smoke test

Its options are this module's flags (``--plan short``, ``--goals 2 3``, ``--resume DIR`` after a crash,
``--dry-run``...); docs/benchmarks.md ("Running it") lists the commands of each use.

Goals (``bench_plan.py`` has the jobs and budgets of each plan):

1. every preset in configs/ (and configs/ALE/) with ``torch_threads`` auto and 1, idle and under
   load, a few rollouts each;
2. CartPole-v1, seconds from launch to a last-100 training mean of 475: ppokit's default preset
   (what ``ppokit train`` runs) and its fast preset against SB3 with rl-baselines3-zoo's settings;
3. steps/s of the same work (the zoo's CartPole settings) in ppokit and SB3, from goal 2's runs;
4. seconds from launch until a checkpoint's deterministic evaluation reaches HalfCheetah 3,000 /
   Hopper 2,500: ppokit's presets against SB3 zoo-HP, every run capped in wall-clock time;
5. steps/s of the CNN policy (Pong) against num_envs and the CNN's width, ppokit and SB3;
6.-7. GPU and torchrun scale-out: need a GPU machine; not run here (the two-node torchrun check
   on localhost is tests/test_multinode.py).

"Under load" means a ``python -c "while True: pass"`` process that this harness starts before the
load block's runs and stops after them. Every run is its own process; for each the harness records
the CPU time all other processes used, less the busy loop's. Raw records are written to
``benchmarks/out/bench-<stamp>/records.json`` after every run, so ``--resume`` can go on after a crash.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml
from bench_plan import PLANS, ZOO_CARTPOLE, Job, build_jobs
from common import OUT, ROOT, BusyLoop, git_commit, launch, machine, versions
from parse import parse_run
from peers.venv import PEERS, ensure_peers, probe_peers
from report import PPOKIT_PACKAGES, write_report

GOALS = ["1", "2", "3", "4", "5"]
PLAN_KEYS = ("seeds", "mujoco_seeds", "mujoco_loads", "mujoco_cap_s", "mujoco_presets")  # override the plan
LOAD_SLOWDOWN = 1.4  # for the time estimate only


def busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> float:
    """CPU-seconds process ``pid`` has used (utime + stime), NaN when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capabilities(peers_py: Path) -> dict[str, bool]:
    """Which optional parts each venv has: ppokit:{mujoco,box2d,ale}, peers:{sb3,mujoco,ale}."""
    found = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    caps = {"ppokit:mujoco": found("mujoco"), "ppokit:box2d": found("Box2D"), "ppokit:ale": found("ale_py")}
    caps.update({f"peers:{k}": v for k, v in probe_peers(peers_py).items()})
    return caps


def run_job(job: Job, timeout_s: int, busy: BusyLoop) -> None:
    """Run one job (``common.launch``: timed from just before launch, ``BENCH_T0``), with the CPU other
    processes used meanwhile: ``other_cpu_cores`` (all of them) and ``foreign_cpu_cores`` (less the
    busy loop)."""
    out = Path(job.out)
    if out.exists():  # a rerun after --resume: ppokit refuses a run directory that holds a run
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    busy_pid = busy.pid
    busy0, loop0 = busy_seconds(), pid_cpu(busy_pid) if busy_pid else 0.0
    done = launch(job.cmd, log=log, timeout=timeout_s)
    wall = max(done.wall_s, 1e-9)
    others = max((busy_seconds() - busy0 - done.cpu_s) / wall, 0.0)
    loop = (pid_cpu(busy_pid) - loop0) / wall if busy_pid else 0.0
    job.record = {
        "rc": done.rc,
        "load": job.load,
        "busy_loop_pid": busy_pid,
        "busy_loop_cores": loop,
        "process_wall_s": done.wall_s,
        "other_cpu_cores": others,
        "foreign_cpu_cores": max(others - loop, 0.0),
        "log": str(log),
    }
    if done.rc == 0:
        job.record.update(parse_run(job.library, out))


def save(run: Path, meta: dict, jobs: list[Job]) -> None:
    tmp = run / "records.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "jobs": [asdict(j) for j in jobs]}, indent=1))
    tmp.replace(run / "records.json")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="The smoke test CI runs: --plan ci.")
    p.add_argument("--plan", choices=sorted(PLANS), help="Budgets and seeds (default full).")
    p.add_argument("--goals", nargs="*", default=GOALS, choices=GOALS, help="Goals to run (default all).")
    p.add_argument("--seeds", nargs="*", type=int, help="Seeds of goals 2-3 (default: the plan's).")
    p.add_argument("--mujoco-seeds", type=int, help="Seeds of goal 4 (default: the plan's, 1 in full).")
    p.add_argument("--mujoco-loads", nargs="*", choices=["idle", "load"], help="Goal 4 loads (full: idle).")
    p.add_argument("--mujoco-cap-s", type=int, help="Goal 4's wall-clock cap per run (full: 420).")
    p.add_argument("--mujoco-presets", nargs="*", help="Goal 4's ppokit presets (default: each env's all).")
    p.add_argument("--peers", type=Path, default=PEERS / "bin" / "python", help="The peers venv's python.")
    p.add_argument("--no-install", action="store_true", help="Never pip-install the peers (skip what lacks).")
    p.add_argument("--out", type=Path, default=OUT, help="Where the bench-<stamp> directory goes.")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to write.")
    p.add_argument("--dry-run", action="store_true", help="Print the jobs and the estimate; run nothing.")
    # fmt: off
    p.add_argument("--resume", type=Path, help="Go on with this bench directory (its plan; --goals/--seeds/"
                   "--mujoco-* given here extend it).")
    p.add_argument("--load-pid", type=int, help="Use this running process as the load (instead of a busy "
                   "loop): continued for the load runs, stopped (SIGSTOP) for the idle ones. Pin it to one "
                   "core first (taskset -c 1).")
    # fmt: on
    p.add_argument("--load-desc", default="", help="What the --load-pid process is (for the report).")
    p.add_argument("--report-only", type=Path, help="Rewrite the report from this bench directory.")
    return p.parse_args(argv)


def plan_from(args: argparse.Namespace) -> tuple[str, dict]:
    name = args.plan or ("ci" if args.quick else "full")
    given = {key: getattr(args, key) for key in PLAN_KEYS}
    return name, {**PLANS[name], **{k: v for k, v in given.items() if v is not None}}


def estimate_min(jobs: list[Job]) -> float:
    return sum(j.est_s * (LOAD_SLOWDOWN if j.load == "load" else 1.0) for j in jobs) / 60


# Options that change what runs (a --resume given them extends its plan) and the load's options.
PLAN_OPTIONS = {"--goals", *("--" + key.replace("_", "-") for key in PLAN_KEYS)}
LOAD_OPTIONS = {"--load-pid", "--load-desc"}


def split_options(argv: list[str], names: set[str]) -> tuple[list[str], list[str]]:
    """``(the options of argv named in names with their values, the rest of argv)``."""
    picked, rest, keep = [], [], False
    for a in argv:
        if a.startswith("--"):
            keep = a in names
        (picked if keep else rest).append(a)
    return picked, rest


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report_only:  # bench.py report: the page from the committed records (the spec's report)
        write_report((ROOT / args.report_only).resolve(), args.md)
        return args.report_only
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    previous, started, old_caps, old_plan, history = {}, now, None, None, []
    first_commit = git_commit(short=True)
    load_argv, old_jobs, old_meta = split_options(argv, LOAD_OPTIONS)[0], {}, {}
    if args.resume:  # (args is parsed again below from the first start's options, without --resume)
        data = json.loads((args.resume / "records.json").read_text())
        old_meta = data["meta"]
        old_jobs = {Job(**j).key: Job(**j) for j in data["jobs"] if j["record"]}
        previous = {k: j.record for k, j in old_jobs.items()}
        started, old_caps = data["meta"]["started"], data["meta"].get("capabilities")
        old_plan = data["meta"]["mode"], data["meta"]["plan"]  # as started, even if PLANS changed since
        extra = split_options(argv, PLAN_OPTIONS)[0]
        if extra:  # more of the same run: the plan is rebuilt from the first start's options + these
            old_plan = None
        given = {a for a in extra if a.startswith("--")}  # these replace the first start's values
        argv = split_options(data["meta"]["argv"], given)[1] + extra
        dry_run = args.dry_run  # this invocation's, not the first start's (which ran)
        args = parse_args(argv + load_argv)
        args.dry_run = dry_run
        run = Path(data["meta"]["run_dir"])
        first_commit = data["meta"].get("commit", first_commit)
        history = data["meta"].get("history", []) + [
            {"resumed": now, "commit": git_commit(short=True), "extra": extra}
        ]
    else:
        run = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    mode, plan = old_plan or plan_from(args)
    peers_py = args.peers
    if mode != "ci" and not args.no_install and not args.dry_run:
        peers_py = ensure_peers(args.peers)
    zoo_yaml = run / "CartPole-v1-zoo.yaml"
    jobs = build_jobs(plan, args.goals, run, peers_py, zoo_yaml)
    todo = [j for j in jobs if previous.get(j.key, {}).get("rc") != 0]
    known = {j.key for j in jobs}  # a resume: runs the plan no longer has (e.g. a preset left out) stay
    jobs += [j for k, j in old_jobs.items() if k not in known]
    print(
        f"{mode} plan: {len(todo)} of {len(jobs)} jobs to run, estimated {estimate_min(todo):.0f} min",
        flush=True,
    )
    if args.dry_run:
        for j in todo:
            print(
                f"  goal {j.goal} {j.group:9s} {j.item:22s} {j.label:18s} s{j.seed} {j.load:4s} "
                f"x={j.x} ~{j.est_s:.0f}s"
            )
        return None
    run.mkdir(parents=True, exist_ok=True)
    zoo_yaml.write_text(yaml.safe_dump(ZOO_CARTPOLE, sort_keys=False))
    meta = {"mode": mode, "plan": plan, "goals": args.goals, "argv": argv, "run_dir": str(run)}
    meta.update(
        command=" ".join(["python benchmarks/side_by_side.py", *argv]),
        started=started,
        commit=first_commit,  # the first start's; a resume from another commit is in history
        machine=machine(),  # kept in the records so that the report regenerates anywhere
        ppokit_versions=versions(PPOKIT_PACKAGES),
        history=history,
        capabilities=None,  # probed before the first run that is not done yet
        peers_python=str(peers_py),
        estimate_min=estimate_min(jobs),
    )
    # the loads and pauses of earlier starts are kept (bug fix: a resume used to drop them)
    loads = old_meta.get("external_loads", [])
    if args.load_pid is not None:
        loads = loads + [{"pid": args.load_pid, "desc": args.load_desc, "from": now}]
    if loads:
        meta["external_loads"] = loads
    busy = BusyLoop(args.load_pid)
    busy.paused = old_meta.get("external_pauses", [])
    meta["external_pauses"] = busy.paused  # the same list: every save writes the pauses so far
    try:
        for i, job in enumerate(jobs, 1):
            if previous.get(job.key, {}).get("rc") == 0:  # failed and skipped runs get another try
                job.cmd, job.out, job.record = old_jobs[job.key].cmd, old_jobs[job.key].out, previous[job.key]
                continue  # (as run: a resume may have changed the plan's options since)
            if meta["capabilities"] is None:
                meta["capabilities"] = capabilities(peers_py)
            missing = [n for n in job.needs if not meta["capabilities"].get(n)]
            if missing:
                job.record = {"skipped": f"not installed: {', '.join(missing)}", "load": job.load}
                save(run, meta, jobs)
                continue
            if job.load == "load":
                busy.start()
            else:
                busy.stop()
            print(
                f"[{i}/{len(jobs)}] goal {job.goal} {job.group} {job.item} {job.label}, seed {job.seed}, "
                f"{job.load}, x={job.x}",
                flush=True,
            )
            run_job(job, plan["timeout_s"], busy)
            r = job.record
            # 475 is CartPole's solved mark (parse.TARGET); for other envs that time means nothing
            reach = f"time to 475 {r.get('time_to_target')}, " if job.group == "cartpole" else ""
            print(
                f"    rc={r['rc']} wall {r['process_wall_s']:.1f}s, steps/s {r.get('fps') or 0:.0f}, "
                f"{reach}eval {r.get('eval_mean')}, "
                f"busy loop {r['busy_loop_cores']:.2f} cores, other CPU {r['foreign_cpu_cores']:.2f} cores",
                flush=True,
            )
            save(run, meta, jobs)
    finally:
        busy.release()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta["capabilities"] = meta["capabilities"] or old_caps  # a resume that ran nothing probed nothing
    save(run, meta, jobs)
    write_report(run, args.md)
    print(f"results: {run}\nreport: {args.md}")
    return run


if __name__ == "__main__":
    main()
