"""PPO (``ppokit rlhf-ppo``) against GRPO (``ppokit grpo``) on the built-in addition task: held-out
accuracy against wall-clock, one plot.

Each algorithm runs with its own built-in preset (what a user gets with no flags): the same tiny
GPT-2, the same 300-step supervised warm start from the same seed (so both start from the same
weights and the same accuracy), the same two rewards and the same held-out prompts, then
``max_seconds`` of RL (``max_steps`` lifted so time is the only limit). For every seed the two
commands run at the same time, one thread each, so they share whatever else loads the machine.
The x axis is ``time/elapsed_s`` of each run's metrics.csv: seconds since the run's training loop
started (after the warm start), evaluations included.

    .venv/bin/python benchmarks/rlhf_vs_grpo.py --seconds 240 --seeds 0 1

Writes ``benchmarks/out/rlhf_vs_grpo/`` (run directories, ``summary.json``) and the figure
``docs/rlhf_vs_grpo.png``; prints a Markdown table for docs/rlhf_ppo.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, Launched, git_commit, launch, machine, pyplot, save_figure, table_head, versions

sys.path.insert(0, str(ROOT / "src"))  # ppokit.plotting reads the runs' metrics

OUT = ROOT / "benchmarks" / "out" / "rlhf_vs_grpo"
ALGOS = {"ppo": "rlhf-ppo", "grpo": "grpo"}
COLORS = {"ppo": "tab:blue", "grpo": "tab:orange"}


def run(algo: str, seed: int, seconds: float) -> Launched:
    """``ppokit <verb>`` for one algorithm and seed, its output in ``OUT/<algo>-s<seed>.log``."""
    run_dir = OUT / f"{algo}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "ppokit", ALGOS[algo], "--run-dir", str(run_dir), "--seed", str(seed)]
    cmd += ["--no-progress", "--set", f"max_seconds={seconds}", "--set", "tensorboard=false"]
    cmd += ["--set", "max_steps=1000000"]  # time is the only limit (both presets stop at 2000 steps)
    return launch(cmd, log=OUT / f"{algo}-s{seed}.log")


def curve(run_dir: Path) -> list[tuple[float, float, int]]:
    """``(seconds, accuracy, step)`` of every held-out evaluation in a run's metrics.csv."""
    from ppokit.plotting import read_csv

    cols = read_csv(run_dir / "metrics.csv")
    return [
        (t, a, int(s))
        for t, a, s in zip(cols["time/elapsed_s"], cols["eval/accuracy"], cols["step"])
        if a == a  # not NaN: a row with an evaluation
    ]


def time_to_gain(points: list[tuple[float, float, int]], gain: float) -> float | None:
    """First time the accuracy is ``gain`` above the first evaluation's (None if never)."""
    for t, a, _ in points:
        if a >= points[0][1] + gain:
            return t
    return None


def plot(results: list[dict], out: Path, seconds: float) -> None:
    """Accuracy against seconds, one line per run (colour: algorithm; line style: seed)."""
    styles = ["-", "--", ":", "-."]
    fig, ax = pyplot().subplots(figsize=(8, 4.6))
    for r in results:
        xs, ys = zip(*[(t, a) for t, a, _ in r["curve"]])
        style = styles[r["seed"] % len(styles)]
        ax.plot(xs, ys, style, color=COLORS[r["algo"]], label=f"{r['algo'].upper()} seed {r['seed']}", lw=1.5)
    ax.set_xlabel("seconds of RL training (after the same warm start; evaluations included)")
    ax.set_ylabel("held-out exact-match accuracy (greedy)")
    ax.set_title(f"PPO (value head) vs GRPO on 2-digit addition, built-in presets, {seconds:.0f} s each")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Run the pairs, write summary.json and the figure, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="max_seconds of RL per run.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Seeds; one PPO+GRPO pair each.")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "rlhf_vs_grpo.png"), help="Figure path.")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    commit = git_commit(short=True)
    results = []
    for seed in args.seeds:
        with ThreadPoolExecutor(len(ALGOS)) as pool:  # the pair at the same time
            done = dict(zip(ALGOS, pool.map(run, ALGOS, [seed] * 2, [args.seconds] * 2)))
        for algo, proc in done.items():
            if proc.rc != 0:
                raise SystemExit(f"{algo} seed {seed} failed; see {OUT / f'{algo}-s{seed}.log'}")
            summary = json.loads((OUT / f"{algo}-s{seed}.log").read_text().strip().splitlines()[-1])
            points = curve(OUT / f"{algo}-s{seed}")
            results.append(
                {
                    "algo": algo,
                    "seed": seed,
                    "accuracy_before": summary["accuracy_before"],
                    "accuracy_after": summary["accuracy_after"],
                    "steps": summary["steps"],
                    "train_seconds": summary["train_seconds"],
                    "seconds_to_plus_30_points": time_to_gain(points, 0.30),
                    "curve": points,
                }
            )
    meta = {"started": started, "commit": commit, "machine": machine()}
    meta["versions"] = versions(["torch", "transformers"])
    meta["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    (OUT / "summary.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    plot(results, Path(args.plot), args.seconds)
    print(json.dumps(meta))
    head = "algorithm | seed | accuracy before | accuracy after | steps | RL seconds | seconds to +30 points"
    print(*table_head(head), sep="\n")
    for r in results:
        to30 = "never" if r["seconds_to_plus_30_points"] is None else f"{r['seconds_to_plus_30_points']:.0f}"
        print(
            f"| {r['algo'].upper()} | {r['seed']} | {r['accuracy_before']:.3f} | {r['accuracy_after']:.3f} "
            f"| {r['steps']} | {r['train_seconds']:.0f} | {to30} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
