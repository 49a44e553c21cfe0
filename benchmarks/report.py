"""docs/benchmarks.md and its plots (evaluation return against wall-clock seconds, goals 2 and 4; CNN
steps/s against num_envs and width, goal 5), from a bench directory's ``records.json`` (issue 17's goals).

    python benchmarks/report.py benchmarks/out/bench-YYYYmmdd-HHMMSS [docs/benchmarks.md]

Per goal: the measured ratio per seed and its median, idle and under load, and whether the goal
holds (or by how much it misses); library versions, the machine, the date, the commit, and how much
CPU other processes took during the runs. The plots go to ``benchmarks/`` beside the Markdown file.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
from pathlib import Path

from common import ROOT, machine, pyplot, save_figure, table_head, versions
from report_goals import LOADS, goal1, goal2, goal3, goal4, goal5

CONTENDED_CORES = 0.25  # other processes (besides the busy loop) above this: timings distorted
PPOKIT_PACKAGES = ["ppokit", "torch", "gymnasium", "mujoco", "ale-py", "numpy"]
NO_GPU = "not measured: no GPU machine was lent"
OTHER_PAGES = [
    ("benchmarks_presets.md", "how the fast presets were chosen, where the time goes, micro-measurements"),
    ("benchmarks_threads.md", "an earlier threads-under-load check (CartPole fast preset, 0/1/2 threads)"),
    ("benchmarks_spine.md", "the training spine's before/after speed"),
    ("benchmarks_grpo.md", "GRPO: ppokit against TRL"),
    ("benchmarks_distributed.md", "torchrun data-parallel scaling on this 2-core CPU machine"),
    ("benchmarks_batched.md", "batched torch envs: ppokit against rsl_rl and skrl (issue 32)"),
]

METHOD = """## How it is measured

- Every run is its own process launched by `benchmarks/side_by_side.py`; its clock starts just
  before the launch, so interpreter start-up and imports count. Rounds alternate: round r runs
  every contestant with seed r (goal 1: repeat r), the idle block and the load block of a round in
  alternating order, so that drift in the machine touches both alike.
- **Under load**: the harness starts `python -c "while True: pass"` before the load block and stops
  it after; each record holds the busy loop's pid and the cores it used during the run
  (`busy_loop_cores`, ~1.0), and the cores all *other* processes used (`foreign_cpu_cores`, from
  /proc/stat less the run's and the busy loop's CPU time).
- **Time to 475** (goal 2): seconds from launch until the mean of the last 100 *training* episode
  returns first reaches 475, from each run's episode log (ppokit's `episodes.csv`, SB3's `Monitor`).
- **steps/s** (goals 1, 3, 5): environment steps of the training divided by the seconds of the
  training loop (no start-up, no final evaluation): ppokit's `time/fps`, SB3's
  `num_timesteps / seconds in learn()`.
- **Time to a MuJoCo target** (goal 4): checkpoints are saved during training (inside the timed run,
  every few tens of thousands of steps, so the time has that resolution) and evaluated after it;
  the time is that of the first checkpoint whose deterministic evaluation reaches the target.
- **Evaluation**: deterministic actions, one fresh episode per environment, seeds 10000+i, the same
  protocol for every library (SB3's `VecNormalize` statistics are saved with each checkpoint).
- **Hyperparameters**: SB3 runs rl-baselines3-zoo's `hyperparams/ppo.yml` entries (CartPole-v1;
  HalfCheetah-v4 and Hopper-v4 on the v5 envs) with 1 torch thread (its fastest setting on small
  networks); ppokit runs its presets as shipped, threads on auto unless a preset pins them.
"""

RUNNING = """## Running it

The spec is `benchmarks/specs/side_by_side.yaml` (the options of the published run); `--set` replaces
its options for another plan.

<!-- doc: check-only hours -->
```bash
make bench                          # = python benchmarks/bench.py run specs/side_by_side.yaml (~1 h)
make bench BENCH_ARGS="--set 'options={quick: true}'"      # the smoke test CI runs, ~2 min
make bench BENCH_ARGS="--set 'options={plan: short}'"      # every goal's path at small budgets, ~10-15 min
make bench BENCH_ARGS="--set 'options={dry_run: true}'"    # the jobs and the estimate
python benchmarks/bench.py run specs/side_by_side.yaml --set 'options={goals: [2, 3], seeds: [0, 1, 2]}'
python benchmarks/bench.py run specs/side_by_side.yaml --set 'options={resume: benchmarks/out/bench-<stamp>}'
# more of a finished run (goal 4 with 3 seeds, idle and under load, a 300 s cap, the best presets),
# the load being a long training the user runs anyway, pinned to one core and paused for idle runs:
python benchmarks/bench.py run specs/side_by_side.yaml --set options.resume=benchmarks/out/bench-<stamp> \\
    --set options.load_pid=<pid> --set 'options.load_desc=what the process is'
python benchmarks/bench.py report specs/side_by_side.yaml     # rewrite this file from the records
```
"""


# -- the plots ---------------------------------------------------------------------------------
TARGETS = {"CartPole-v1": 475.0, "HalfCheetah-v5": 3000.0, "Hopper-v5": 2500.0}
STYLE = {"idle": "-", "load": ":"}


def plot_curves(jobs: list[dict], path: Path, note: str) -> bool:
    """One panel per environment (CartPole, then the MuJoCo envs): each contestant's checkpoint
    evaluations against seconds since launch; solid idle, dotted under load. False: nothing to plot."""
    runs = [j for j in jobs if j["group"] in ("cartpole", "mujoco") and j["record"].get("eval_curve")]
    envs = list(dict.fromkeys(j["item"] for j in runs))
    if not envs or not runs:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        labels = list(dict.fromkeys(j["label"] for j in runs if j["item"] == env))
        for k, label in enumerate(labels):
            seen = set()
            for j in (j for j in runs if j["item"] == env and j["label"] == label):
                curve = j["record"]["eval_curve"]
                name = f"{label} ({j['load']})"
                ax.plot(
                    [c[0] for c in curve],
                    [c[1] for c in curve],
                    STYLE.get(j["load"], "-"),
                    marker="o",
                    ms=2.5,
                    color=f"C{k}",
                    alpha=0.8,
                    label=None if name in seen else name,
                )
                seen.add(name)
        if env in TARGETS:
            ax.axhline(TARGETS[env], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="wall-clock seconds since launch", ylabel="evaluation return (deterministic)")
        ax.set_title(env + note, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)
    return True


def plot_cnn_growth(jobs: list[dict], path: Path, note: str) -> bool:
    """Steps/s against num_envs and against the CNN width (log-log), per library and load."""
    groups = [g for g in ("cnn-envs", "cnn-width") if any(j["group"] == g for j in jobs)]
    if not groups:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = [j for j in jobs if j["group"] == group]
        if group == "cnn-width":
            rows += [
                {**j, "x": 512}
                for j in jobs
                if j["group"] == "cnn-envs" and j["x"] == 8 and j["label"] != "ppokit bf16"
            ]
        for k, lib in enumerate(("ppokit", "SB3 CnnPolicy", "ppokit bf16")):  # the contestants' labels
            for load in ("idle", "load"):
                pts = sorted(
                    (j["x"], j["record"]["fps"])
                    for j in rows
                    if j["label"] == lib and j["load"] == load and j["record"].get("fps")
                )
                if pts:
                    ax.plot(*zip(*pts), STYLE[load], marker="o", color=f"C{k}", label=f"{lib} ({load})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="num_envs" if group == "cnn-envs" else "CNN feature width", ylabel="training steps/s")
        ax.set_title(("Pong, width 512" if group == "cnn-envs" else "Pong, 8 envs") + note, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
    return True


def load_stats(jobs: list[dict]) -> tuple[float, float]:
    """Median and max of the cores that processes other than the run and the busy loop used."""
    vals = [j["record"]["foreign_cpu_cores"] for j in jobs if "foreign_cpu_cores" in j["record"]]
    return (statistics.median(vals), max(vals)) if vals else (0.0, 0.0)


def banner(smoke: bool, contended: bool, med: float, mx: float) -> list[str]:
    if not (smoke or contended):
        return []
    text = "> **⚠️ Not figures to quote.** "
    if smoke:
        text += (
            "This file comes from a smoke run (small budgets) that only shows the harness works end to end. "
        )
    if contended:
        text += f"Processes other than the runs and the busy loop kept on average {med:.2f} and at most "
        text += f"{mx:.2f} CPU cores busy (of {os.cpu_count()}), so timings and ratios are distorted. "
    return [text + "Run `make bench` on an otherwise idle machine for real figures.", ""]


def setup_lines(meta: dict, jobs: list[dict], med: float, mx: float) -> list[str]:
    peer = next(
        (
            j["record"].get("versions")
            for j in jobs
            if j["library"] == "stable-baselines3" and j["record"].get("versions")
        ),
        None,
    )
    caps = meta.get("capabilities") or {}
    missing = [k for k, v in caps.items() if not v]
    lines = [
        f"Generated by `{meta['command']}` ({meta['mode']} plan), {meta['started']} to "
        f"{meta.get('finished', 'unfinished')}, commit {meta.get('commit', 'unknown')}.",
        "",
        f"- Machine: {meta.get('machine') or machine()}.",
        f"- Load: idle runs alone; 'under load' runs beside a busy loop on one core. Other processes' CPU "
        f"during the runs (besides the busy loop): median {med:.2f}, max {mx:.2f} cores "
        f"(above {CONTENDED_CORES}: contended).",
        *(
            f"- From {x['from']} on, the load runs' competing process was {x['desc'] or 'another process'} "
            f"(pid {x['pid']}) instead of the busy loop; it was stopped (SIGSTOP) during the idle runs."
            for x in meta.get("external_loads", [])
        ),
        *(
            f"- Resumed {h['resumed']} at commit {h['commit']}"
            + (f" with `{' '.join(h['extra'])}`" if h["extra"] else "")
            + "."
            for h in meta.get("history", [])
        ),
        f"- ppokit venv: {meta.get('ppokit_versions') or versions(PPOKIT_PACKAGES)}.",
        "- peers venv: "
        + (", ".join(f"{k} {v}" for k, v in peer.items()) if peer else "no SB3 run finished")
        + ".",
    ]
    if missing:
        lines.append(f"- Not installed, so the runs needing them were skipped: {', '.join(missing)}.")
    return lines + [""]


def cell(entry) -> str:
    """'median (per seed a, b) — verdict' of a goal-2/3/4 summary entry, '-' when absent."""
    if entry is None:
        return "not run"
    seeds, med, text, _ = entry
    return text if med == "-" else f"{med}, per seed {seeds}: {text}"


def summary_table(s1: dict, s2: dict, s3: dict, s4: dict, s5: dict) -> list[str]:
    lines = [
        "## Summary",
        "",
        *table_head("goal | target | idle | under load"),
        "| 1. threads: training time, auto / 1 thread, every preset | ≤ 1.10× (never slower) | "
        + " | ".join(s1.get(load, ("not run",))[0] for load in LOADS)
        + " |",
    ]
    for label in dict.fromkeys(k[0] for k in s2):
        name = "default `ppokit train` preset" if label == "ppokit preset" else label
        lines.append(
            f"| 2. CartPole seconds to 475, {name} / SB3 zoo-HP | ≤ 0.20× | "
            + " | ".join(cell(s2.get((label, load))) for load in LOADS)
            + " |"
        )
    lines.append(
        "| 3. CartPole steps/s, same hyperparameters, ppokit / SB3 | ≥ 3× | "
        + " | ".join(cell(s3.get(load)) for load in LOADS)
        + " |"
    )
    for env, label in dict.fromkeys((k[0], k[1]) for k in s4):
        lines.append(
            f"| 4. {env} seconds to target, {label if '/' in label else label + ' / SB3 zoo-HP'} | ≤ 0.20× | "
            + " | ".join(cell(s4.get((env, label, load))) for load in LOADS)
            + " |"
        )
    for group, what in (("cnn-envs", "num_envs"), ("cnn-width", "CNN width")):
        if any(k[0] == group for k in s5):
            lines.append(
                f"| 5. Pong CNN steps/s against {what}, ppokit / SB3 (range over points) | (no number set) | "
                + " | ".join(s5.get((group, load), "-") for load in LOADS)
                + " |"
            )
    lines += [
        f"| 6. GPU | | {NO_GPU} | {NO_GPU} |",
        f"| 7. torchrun scale-out 1/2/4/8 processes | | {NO_GPU} | {NO_GPU} |",
        "",
    ]
    return lines


def gpu_sections() -> list[str]:
    return [
        "## Goal 6: GPU",
        "",
        "Not measured: no GPU machine was lent to this session; there are no GPU figures here.",
        "",
        "## Goal 7: scale-out with torchrun (1/2/4/8 processes)",
        "",
        "Not measured: no GPU machine was lent; there are no scale-out figures here. The multi-node path is",
        'checked at CI size by `tests/test_multinode.py`: two torchrun "nodes" (`--nnodes 2',
        "--nproc_per_node 1`, c10d rendezvous on localhost) train CartPole together and the test asserts",
        "one run directory whose step counts advance by both nodes' rollouts and checkpoints at the summed",
        "steps. Data-parallel CPU figures from an earlier session:",
        "[benchmarks_distributed.md](benchmarks_distributed.md).",
        "",
    ]


def read_records(path: Path) -> dict:
    """A bench directory's records.json, or a gzipped copy of one (docs/benchmarks/records-*.json.gz)."""
    path = Path(path)
    if path.suffix == ".gz":
        return json.loads(gzip.decompress(path.read_bytes()))
    return json.loads((path / "records.json").read_text())


def write_report(bench_dir: Path, md: Path) -> None:
    """Write ``md`` and its plots (in ``md.parent/benchmarks/``) from ``bench_dir/records.json`` (or
    from a committed ``records-<stamp>.json.gz``)."""
    data = read_records(bench_dir)
    meta, jobs = data["meta"], [j for j in data["jobs"] if j["record"]]
    med, mx = load_stats(jobs)
    smoke, contended = meta["mode"] != "full", mx > CONTENDED_CORES
    note = (" — SMOKE RUN" if smoke else "") + (" — CONTENDED" if contended else "")
    plots = md.parent / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    has_curves = plot_curves(jobs, plots / "eval_vs_time.png", note)
    plot_cnn_growth(jobs, plots / "cnn_growth.png", note)

    l1, s1 = goal1(jobs, meta["plan"])
    l2, s2 = goal2(jobs)
    l3, s3 = goal3(jobs)
    l4, s4 = goal4(jobs, meta)
    l5, s5 = goal5(jobs, meta)
    lines = [
        '# Benchmarks: issue 17 ("Performance, round two"), ppokit side by side with Stable-Baselines3',
        "",
    ]
    lines += banner(smoke, contended, med, mx) + setup_lines(meta, jobs, med, mx)
    lines += summary_table(s1, s2, s3, s4, s5)
    goals = set(meta.get("goals", []))
    for goal, section in (("1", l1), ("2", l2), ("3", l3), ("4", l4), ("5", l5)):
        ran = goal in goals or (goal == "2" and "3" in goals)  # goal 3 reads goal 2's runs
        lines += section if ran else [f"## Goal {goal}: not run (`--goals` left it out)", ""]
    if has_curves:
        lines += ["![evaluation return against wall-clock seconds](benchmarks/eval_vs_time.png)", ""]
    lines += gpu_sections() + [METHOD, RUNNING]
    failed = [j for j in jobs if j["record"].get("rc") not in (0, None)]
    skipped = [j for j in jobs if "skipped" in j["record"]]
    if failed or skipped:
        lines += ["## Failed and skipped runs", ""]
        lines += [
            f"- goal {j['goal']} {j['item']} {j['label']} seed {j['seed']} {j['load']}: rc "
            f"{j['record']['rc']}, `{j['record']['log']}`"
            for j in failed
        ]
        lines += [
            f"- goal {j['goal']} {j['item']} {j['label']} seed {j['seed']} {j['load']} x={j['x']}: "
            f"{j['record']['skipped']}"
            for j in skipped
        ]
        lines += [""]
    lines += ["## Other benchmark pages", ""]
    lines += [
        f"- [{name}]({name}): {what}"
        for name, what in OTHER_PAGES
        if (md.parent / name).exists() or (ROOT / "docs" / name).exists()
    ]
    where = Path(meta.get("run_dir", bench_dir)).resolve()
    if where.is_relative_to(ROOT):
        where = where.relative_to(ROOT)
    elif where.parent.parts[-2:] == ("benchmarks", "out"):  # made in another checkout of the project
        where = Path("benchmarks", "out", where.name)
    kept = md.parent / "benchmarks" / f"records-{where.name.removeprefix('bench-')}.json.gz"
    if kept.exists():  # a gzipped copy committed beside the page (gzip -c records.json > that file)
        rel = kept.relative_to(md.parent)
        lines += ["", f"Raw records: `{where}/records.json`, committed gzipped as [{rel}]({rel})."]
    else:
        lines += ["", f"Raw records: `{where}/records.json` (not committed)."]
    md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    default_md = ROOT / "docs" / "benchmarks.md"
    write_report(Path(sys.argv[1]).resolve(), Path(sys.argv[2]) if len(sys.argv) > 2 else default_md)
