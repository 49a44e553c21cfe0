"""docs/benchmarks.md and its plots, from a finished bench directory (``records.json``).

    python benchmarks/report.py benchmarks/out/bench-YYYYmmdd-HHMMSS   # rewrite docs/benchmarks.md

Medians over seeds with min-max, ratios of medians for the issue's goals (with the per-seed ratios
of runs that ran back to back, min-max), library versions, the machine, the date, and how busy the
machine was with other work during the runs (a contended run's timings are not figures to quote).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from common import ROOT, git_commit, machine, versions  # noqa: E402

PLOTS = ROOT / "docs" / "benchmarks"
NOTES = ROOT / "benchmarks" / "notes.md"  # hand-written (fast preset check, profile), included as is
SECTIONS = [ROOT / "docs" / "benchmarks_grpo.md", ROOT / "docs" / "benchmarks_distributed.md"]
CONTENDED_CORES = 0.25  # other processes using more than this many cores on average: contended
PPOKIT_PACKAGES = ["ppokit", "torch", "gymnasium", "mujoco", "numpy"]
# One colour per contestant in every plot (ppokit blue/orange/purple, SB3 green/red, ours brown).
COLORS = {
    "ppokit preset": "C0",
    "ppokit fast preset": "C1",
    "ppokit zoo-HP": "C4",
    "ppokit SB3-defaults-HP": "C4",
    "SB3 zoo-HP": "C2",
    "SB3 defaults": "C3",
    "CleanRL-style (ours)": "C5",
    "ppokit": "C0",
    "SB3": "C3",
}


def stat(values: list[float | None], fmt: str = "{:,.0f}") -> str:
    """'median (min-max)' of the known values, '-' when none."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    med = fmt.format(statistics.median(known))
    return med if len(known) == 1 else f"{med} ({fmt.format(min(known))}–{fmt.format(max(known))})"


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def by_label(jobs: list[dict], group: str) -> dict[str, list[dict]]:
    """Finished jobs of ``group`` per contestant, in the order they ran."""
    out: dict[str, list[dict]] = {}
    for j in jobs:
        if j["group"] == group:
            out.setdefault(j["label"], []).append(j)
    return out


def solved(j: dict) -> bool:
    """Reached a last-100 training mean of 475 and evaluated at >= 475 (20 episodes)."""
    r = j["record"]
    return r.get("time_to_target") is not None and (r.get("eval_mean") or 0) >= 475


def ratio(jobs: dict[str, list[dict]], num: str, den: str, key: str) -> str:
    """Ratio of medians ``num/den`` of ``key``, and min-max of the same-seed ratios."""
    if num not in jobs or den not in jobs:
        return "-"
    a = {j["seed"]: j["record"].get(key) for j in jobs[num]}
    b = {j["seed"]: j["record"].get(key) for j in jobs[den]}
    ma, mb = median(list(a.values())), median(list(b.values()))
    if not ma or not mb:
        return "-"
    paired = [a[s] / b[s] for s in a if a.get(s) and b.get(s)]
    spread = f" (per seed {min(paired):.2f}–{max(paired):.2f})" if len(paired) > 1 else ""
    return f"{ma / mb:.2f}×{spread}"


def contention(jobs: list[dict]) -> tuple[float, float]:
    """Median and max of the cores other processes kept busy during the timed jobs."""
    loads = [j["record"]["other_cpu_cores"] for j in jobs if "other_cpu_cores" in j["record"]]
    return (statistics.median(loads), max(loads)) if loads else (0.0, 0.0)


def cartpole_table(groups: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| contestant | runs | solved | time to 475 (s) | steps to 475 | steps/s | final eval (20 ep.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, js in groups.items():
        rec = [j["record"] for j in js]
        lines.append(
            f"| {label} | {len(js)} | {sum(solved(j) for j in js)}/{len(js)} "
            f"| {stat([r.get('time_to_target') for r in rec], '{:.1f}')} "
            f"| {stat([r.get('steps_to_target') for r in rec])} | {stat([r.get('fps') for r in rec])} "
            f"| {stat([r.get('eval_mean') for r in rec], '{:.1f}')} |"
        )
    return lines


def simple_table(groups: dict[str, list[dict]]) -> list[str]:
    lines = ["| contestant | runs | steps | steps/s | final eval (20 ep.) |", "|---|---|---|---|---|"]
    for label, js in groups.items():
        rec = [j["record"] for j in js]
        lines.append(
            f"| {label} | {len(js)} | {stat([r.get('total_timesteps') for r in rec])} "
            f"| {stat([r.get('fps') for r in rec])} | {stat([r.get('eval_mean') for r in rec], '{:.1f}')} |"
        )
    return lines


def growth_table(jobs: list[dict], group: str, knob: str) -> list[str]:
    rows = sorted({j["x"] for j in jobs if j["group"] == group})
    labels = list(by_label(jobs, group))
    lines = [
        f"| {knob} | " + " | ".join(f"{lab} steps/s" for lab in labels) + " | ratio |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for x in rows:
        fps = [
            next(
                (
                    j["record"].get("fps")
                    for j in jobs
                    if j["group"] == group and j["x"] == x and j["label"] == lab
                ),
                None,
            )
            for lab in labels
        ]
        r = f"{fps[0] / fps[1]:.2f}×" if len(fps) == 2 and fps[0] and fps[1] else "-"
        lines.append(f"| {x} | " + " | ".join(f"{v:,.0f}" if v else "failed" for v in fps) + f" | {r} |")
    return lines


def plot_curves(jobs: list[dict], path: Path, title_note: str) -> None:
    """Evaluation return (20 episodes, checkpoints evaluated after training) against wall-clock
    seconds since launch: one panel per environment, every contestant on it, one line per seed."""
    envs = [g for g in ("cartpole", "halfcheetah") if any(j["group"] == g for j in jobs)]
    if not envs:
        return
    fig, axes = plt.subplots(1, len(envs), figsize=(7 * len(envs), 4.5), squeeze=False)
    for ax, group in zip(axes[0], envs):
        for k, (label, js) in enumerate(by_label(jobs, group).items()):
            for n, j in enumerate(js):
                curve = j["record"].get("eval_curve") or []
                if curve:
                    t, ev = [c[0] for c in curve], [c[1] for c in curve]
                    ax.plot(
                        t, ev, marker="o", ms=3, color=f"C{k}", alpha=0.8, label=label if n == 0 else None
                    )
        if group == "cartpole":
            ax.axhline(475, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="wall-clock seconds since process launch", ylabel="evaluation return (20 episodes)")
        ax.set_title(
            {"cartpole": "CartPole-v1", "halfcheetah": "HalfCheetah-v5"}[group] + title_note, fontsize=10
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_growth(jobs: list[dict], path: Path, title_note: str) -> None:
    """Steps/s against num_envs and against hidden width (log-log)."""
    groups = [g for g in ("growth-envs", "growth-width") if any(j["group"] == g for j in jobs)]
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for k, (label, js) in enumerate(by_label(jobs, group).items()):
            pts = sorted((j["x"], j["record"]["fps"]) for j in js if j["record"].get("fps"))
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                color=COLORS.get(label, f"C{k}"),
                label=label,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(
            xlabel="num_envs" if group == "growth-envs" else "hidden width (2 layers)",
            ylabel="training steps/s",
        )
        ax.set_title(
            ("CartPole-v1, 64-64 MLP" if group == "growth-envs" else "CartPole-v1, 8 envs") + title_note,
            fontsize=10,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


METHOD = """## Running it

```bash
make bench                      # peers into benchmarks/.peers; 3 seeds, full budgets
make bench BENCH_ARGS=--quick   # smoke test of the harness: 1 seed, small budgets (a few minutes)
.venv/bin/python benchmarks/side_by_side.py --groups cartpole --seeds 0 1 2   # one part only
.venv/bin/python benchmarks/report.py benchmarks/out/bench-<stamp>          # rewrite this file
.venv/bin/python benchmarks/profile_ppokit.py --config configs/CartPole-v1-fast.yaml   # profile
```

Run it on an otherwise idle machine: the harness measures how much CPU other processes used during
each run and marks the report as contended when they used more than a quarter of a core.

## How it is measured

- Every run is its own process launched by `benchmarks/side_by_side.py`; its clock starts just
  before the launch, so interpreter start-up and imports count. Seeds alternate: every contestant
  runs once for seed 0, then once for seed 1, and so on.
- **Time to 475**: seconds from launch until the mean of the last 100 *training* episode returns
  first reaches 475, read from each run's episode log (ppokit's own `episodes.csv`; the peers'
  drivers log SB3's `Monitor` episodes and ours the same way). **Solved** also needs the final
  20-episode deterministic evaluation to reach 475.
- **steps/s**: environment steps of the whole training divided by the time of the training loop
  (rollouts, updates, logging; without start-up and final evaluation): ppokit's `time/fps`, and
  `num_timesteps / seconds in learn()` for SB3.
- **Evaluation**: 20 episodes, deterministic actions, one fresh episode per environment, seeds
  10000+i, the same protocol for every library. The curve plot evaluates checkpoints saved during
  training (about 10 per run; the saving is inside the timed run for every library) after the
  training has finished.
- **Budgets**: in full mode every CartPole contestant trains for its own budget (the zoo's 100k
  steps, each preset's own, CleanRL's default 500k); on HalfCheetah every contestant runs the same
  number of steps; `--quick` cuts every budget down but the fast preset's (seconds).
- torch threads: SB3 and the CleanRL-style runner run on one thread, and so does ppokit (its
  default `torch_threads: 1`) except the fast CartPole preset, which sets 2 (at its minibatches of
  1024 the second thread paid; SB3 zoo-HP with torch's default 2 threads ran 3% faster than on one
  in an earlier check, see below).
"""


def banner(smoke: bool, contended: bool, med_load: float, max_load: float) -> list[str]:
    """The warning at the top of a report whose timings must not be quoted."""
    if not (smoke or contended):
        return []
    text = "> **⚠️ Not figures to quote.** "
    if smoke:
        text += "This file comes from a `--quick` smoke run (1 seed, small budgets) that only shows "
        text += "that the harness works end to end. "
    if contended:
        text += f"Other processes kept on average {med_load:.2f} and at most {max_load:.2f} CPU cores "
        text += f"busy during the timed runs (of {os.cpu_count()}), so timings and ratios are distorted. "
    return [text + "Re-run `make bench` on an otherwise idle machine for real figures.", ""]


def setup_lines(meta: dict, done: list[dict], med_load: float, max_load: float) -> list[str]:
    """Command, date, machine, load, versions and the CleanRL finding."""
    lines = [
        f"Generated by `{meta['command']}` ({meta['mode']} mode, seeds {meta['seeds']}), "
        f"{meta['started']} to {meta.get('finished', 'unfinished')}, "
        f"commit {meta.get('commit') or git_commit()}.",
        "",
        f"- Machine: {machine()}.",
        f"- Other processes' CPU use during the timed runs: median {med_load:.2f}, max {max_load:.2f} "
        f"cores (from /proc/stat less the run's own CPU time; above {CONTENDED_CORES}: contended).",
        f"- ppokit venv: {versions(PPOKIT_PACKAGES)}.",
    ]
    peer = next((j["record"].get("versions") for j in done if j["library"] == "stable-baselines3"), None)
    if peer:
        lines.append(
            "- peers venv (`benchmarks/.peers`): " + ", ".join(f"{k} {v}" for k, v in peer.items()) + "."
        )
    cl = meta.get("cleanrl_check") or {}
    text = f"- CleanRL: `pip install cleanrl` {'installs' if cl.get('installs') else 'does not install'}"
    text += f" (version {cl['version']})" if cl.get("version") else ""
    text += f" and this is Python {platform.python_version()}: {cl['newer']}" if cl.get("newer") else ""
    text += f"; {cl.get('detail', 'not checked')}."
    if not cl.get("runs"):
        text += " So the `CleanRL-style (ours)` rows are our own single-file PPO with the defaults of "
        text += "CleanRL's `ppo.py` (`benchmarks/peers/cleanrl_style_ppo.py`), **not CleanRL's code**."
    return [*lines, text, ""]


def cartpole_section(cart: dict[str, list[dict]]) -> list[str]:
    zoo = "ppokit zoo-HP" if "ppokit zoo-HP" in cart else "ppokit preset"
    sb3, fast, ttt = "SB3 zoo-HP", "ppokit fast preset", "time_to_target"
    return [
        "## CartPole-v1",
        "",
        *cartpole_table(cart),
        "",
        "| goal | measured | target |",
        "|---|---|---|",
        f"| 1. time to 475, SB3 zoo-HP / ppokit preset | {ratio(cart, sb3, 'ppokit preset', ttt)} | ≥ 10× |",
        f"| 1. time to 475, SB3 zoo-HP / ppokit fast preset | {ratio(cart, sb3, fast, ttt)} | ≥ 10× |",
        f"| 2. steps/s with the zoo's hyperparameters, ppokit / SB3 | {ratio(cart, zoo, sb3, 'fps')} "
        "| ≥ 3×, both solve |",
        f"| steps/s, ppokit fast preset / SB3 zoo-HP | {ratio(cart, fast, sb3, 'fps')} | |",
        f"| time to 475, CleanRL-style (ours) / ppokit fast preset "
        f"| {ratio(cart, 'CleanRL-style (ours)', fast, ttt)} | |",
        "",
        "Ratios are of the medians; in brackets the range of the ratios of same-seed runs. "
        + (
            "The CartPole preset *is* the zoo's hyperparameters, so its row is also goal 2's."
            if zoo == "ppokit preset"
            else "The CartPole preset is not the zoo's hyperparameters; goal 2 uses the `ppokit zoo-HP` row."
        ),
        "",
    ]


def growth_section(meta: dict, done: list[dict]) -> list[str]:
    plan = meta["plan"]
    return [
        "## Growth (goal 4)",
        "",
        "Training steps/s on CartPole-v1 with the zoo's settings (n_steps 32, 20 epochs, one minibatch",
        "of the whole rollout per epoch) and one knob changed; seed "
        f"{meta['seeds'][0]}, one run per point, no evaluation;",
        f"at least {plan['growth_min_updates']} updates and {plan['growth_min_steps']:,} steps per point.",
        "",
        *growth_table(done, "growth-envs", "num_envs"),
        "",
        *growth_table(done, "growth-width", "width (8 envs)"),
        "",
        "![steps/s against num_envs and width](benchmarks/growth.png)",
        "",
    ]


def write_report(bench_dir: Path, md: Path) -> None:
    """Write ``md`` and the plots in docs/benchmarks/ from ``bench_dir/records.json``."""
    data = json.loads((bench_dir / "records.json").read_text())
    meta, jobs = data["meta"], [j for j in data["jobs"] if j["record"]]
    done = [j for j in jobs if j["record"].get("rc") == 0]
    failed = [j for j in jobs if j["record"].get("rc") != 0]
    med_load, max_load = contention(jobs)
    smoke, contended = meta["mode"] == "quick", max_load > CONTENDED_CORES
    note = (" — SMOKE RUN" if smoke else "") + (" — CONTENDED MACHINE" if contended else "")
    PLOTS.mkdir(parents=True, exist_ok=True)
    plot_curves(done, PLOTS / "eval_vs_time.png", note)
    plot_growth(done, PLOTS / "growth.png", note)

    lines = ["# Benchmarks: ppokit side by side with Stable-Baselines3", ""]
    lines += banner(smoke, contended, med_load, max_load) + setup_lines(meta, done, med_load, max_load)
    lines += [METHOD]
    if failed:
        lines += ["**Failed runs:**", ""]
        lines += [
            f"- {j['group']} {j['label']} seed {j['seed']}: rc {j['record']['rc']}, `{j['record']['log']}`"
            for j in failed
        ]
        lines += [""]
    cart, cheetah = by_label(done, "cartpole"), by_label(done, "halfcheetah")
    if cart:
        lines += cartpole_section(cart)
    if cheetah:
        lines += ["## HalfCheetah-v5", "", *simple_table(cheetah), ""]
        lines += [
            "Goal 3, steps/s ppokit preset / SB3 defaults: "
            f"{ratio(cheetah, 'ppokit preset', 'SB3 defaults', 'fps')}; "
            f"fast preset / SB3 defaults: {ratio(cheetah, 'ppokit fast preset', 'SB3 defaults', 'fps')}; "
            "with SB3's default hyperparameters in both (the same work): "
            f"{ratio(cheetah, 'ppokit SB3-defaults-HP', 'SB3 defaults', 'fps')}. Target ≥ 5×, at an equal "
            "or better evaluation return after the same number of steps.",
            "",
        ]
    if cart or cheetah:
        lines += ["![evaluation return against wall-clock seconds](benchmarks/eval_vs_time.png)", ""]
    if any(j["group"].startswith("growth") for j in done):
        lines += growth_section(meta, done)
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    # Sections written by the other benchmark scripts (GRPO vs TRL, torchrun scaling), included as is.
    for section in SECTIONS:
        if section.exists():
            lines += [section.read_text().strip(), ""]
    where = bench_dir.relative_to(ROOT) if bench_dir.is_relative_to(ROOT) else bench_dir
    lines += [f"Raw records: `{where}/records.json` (not committed)."]
    md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    default_md = ROOT / "docs" / "benchmarks.md"
    write_report(Path(sys.argv[1]).resolve(), Path(sys.argv[2]) if len(sys.argv) > 2 else default_md)
