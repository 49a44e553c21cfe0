"""Before/after speed of the default runs, in one run: ``ppokit train`` of the CartPole and
HalfCheetah presets (and their wall-clock variants) with the code of two commits, alternating A, B,
A, B, ... so that whatever else the machine does touches both alike.

    .venv/bin/python benchmarks/spine_ab.py --before /path/to/old/checkout --repeats 3

``--before`` is a checkout of the old commit (e.g. ``git worktree add /tmp/old 3b086c5``); the
current tree is "after". Each run is a fresh process (``python -m ppokit train``) with
``PYTHONPATH`` pointing at one tree's ``src``; steps/s is the run's own ``time/fps`` at its last
update, wall-clock is launch to exit, CPU is the child's user + system seconds (less sensitive than
wall-clock to other work on the machine, though not immune: caches and memory bandwidth are shared).
Prints a Markdown table of medians (and every run).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import train_cmd

HERE = Path(__file__).resolve().parents[1]
RUNS = {  # name: (preset, steps)
    "CartPole-v1 (default `ppokit train`)": ("configs/CartPole-v1.yaml", 100_000),
    "CartPole-v1-fast": ("configs/CartPole-v1-fast.yaml", 100_000),
    "HalfCheetah-v5 (zoo preset)": ("configs/HalfCheetah-v5.yaml", 10_240),
    "HalfCheetah-v5-fast": ("configs/HalfCheetah-v5-fast.yaml", 100_000),
}


def one_run(tree: Path, preset: str, steps: int) -> tuple[float, float, float]:
    """``(steps/s, wall seconds, CPU seconds)`` of one ``ppokit train`` with ``tree``'s code."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = train_cmd(tree / preset, run_dir, steps)
        t0, cpu0 = time.perf_counter(), _child_cpu()
        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(tree / "src")},
        )
        wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
        with open(run_dir / "metrics.csv", newline="") as f:
            fps = float(list(csv.DictReader(f))[-1]["time/fps"])
    return fps, wall, cpu


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the old commit")
    ap.add_argument(
        "--after", type=Path, default=HERE, help="checkout of the new commit (default: this tree)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run names to include (default: all)")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for name, (preset, steps) in RUNS.items():
        if args.only and name not in args.only:
            continue
        for _ in range(args.repeats):
            for label, tree in trees.items():
                results.setdefault((name, label), []).append(one_run(tree, preset, steps))
                fps, wall, cpu = results[(name, label)][-1]
                print(f"{name:40s} {label:6s} {fps:10.0f} steps/s {wall:7.1f} s {cpu:7.1f} cpu-s", flush=True)
    print(
        "\n| run | before steps/s | after steps/s | after/before | wall s before / after "
        "| CPU s before / after |"
    )
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in results):
        b, a = results[(name, "before")], results[(name, "after")]
        fb, fa = statistics.median(x[0] for x in b), statistics.median(x[0] for x in a)
        wb, wa = statistics.median(x[1] for x in b), statistics.median(x[1] for x in a)
        cb, ca = statistics.median(x[2] for x in b), statistics.median(x[2] for x in a)
        print(
            f"| {name} | {fb:,.0f} | {fa:,.0f} | {fa / fb:.2f} | {wb:.1f} / {wa:.1f} | {cb:.1f} / {ca:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
