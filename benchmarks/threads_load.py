"""Issue 17, goal 1: is any thread setting slower with other work on the machine than one thread?

Runs ``ppokit train`` of a preset with ``torch_threads`` = 0 (auto), 1 and 2, each idle and with a
competing CPU-bound process (a Python busy loop pinned to nothing, as another user's job would be),
alternating settings so that drift touches all alike, and prints a Markdown table of the median
wall-clock from launch to exit and the median steps/s.

    .venv/bin/python benchmarks/threads_load.py --config configs/CartPole-v1-fast.yaml --repeats 3

One preset, any thread counts, more repeats: for a closer look. Every preset with auto against one
thread, idle and under load, is goal 1 of ``benchmarks/side_by_side.py`` (``--goals 1``).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import train_cmd

BUSY = "while True: pass"


def one_run(config: str, threads: int, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = train_cmd(config, run_dir, steps, "--set", f"torch_threads={threads}")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ)
        wall = time.perf_counter() - t0
        with open(run_dir / "metrics.csv", newline="") as f:
            fps = float(list(csv.DictReader(f))[-1]["time/fps"])
    return wall, fps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/CartPole-v1-fast.yaml")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="*", default=[0, 1, 2])
    args = ap.parse_args()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for load in ("idle", "busy loop on one core"):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load != "idle" else None
        try:
            time.sleep(2.0 if busy else 0.0)  # let the auto setting see the load
            for _ in range(args.repeats):
                for t in args.threads:
                    r = one_run(args.config, t, args.steps)
                    results.setdefault((load, t), []).append(r)
                    print(f"{load:24s} threads={t} {r[0]:6.1f} s {r[1]:9.0f} steps/s", flush=True)
        finally:
            if busy:
                busy.kill()
    print(f"\n{args.config}, {args.steps} steps, median of {args.repeats} (0 = auto)\n")
    print("| load | torch_threads | wall s (median) | steps/s (median) | runs (wall s) |")
    print("|---|---|---|---|---|")
    for (load, t), rs in results.items():
        walls = [w for w, _ in rs]
        print(
            f"| {load} | {t} | {statistics.median(walls):.1f} | {statistics.median(f for _, f in rs):,.0f} "
            f"| {', '.join(f'{w:.1f}' for w in walls)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
