"""One ppokit run for the side-by-side benchmark: ``ppokit train ARGS...`` in this process, then
the offline evaluation of its checkpoints.

    BENCH_T0=$(date +%s.%N) .venv/bin/python benchmarks/ppokit_run.py --run-dir DIR --seed 0 \
        --config configs/CartPole-v1.yaml --set checkpoint_every=10000 --set keep_checkpoints=1000

It is exactly the ``ppokit train`` command (``ppokit.cli.main``) a user runs. ppokit's own files
are used as they are: ``episodes.csv`` and ``metrics.csv`` time everything from
``ppokit.tracking.PROCESS_START`` (set when ppokit is imported); this driver adds
``bench.json`` with ``process_start_offset_s = PROCESS_START - BENCH_T0``, so the harness can count
from the same launch instant for every library (interpreter start-up and imports included).

After training (outside the timed part) each checkpoint in ``RUN_DIR/checkpoints`` is evaluated
like the final model (20 deterministic episodes) and written to ``bench_checkpoints.csv``
(``step, time_s, eval_mean``, time counted from BENCH_T0) for the evaluation-vs-time plot.
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def run_dir_from(argv: list[str]) -> Path:
    """The value of ``--run-dir`` (the harness always passes one)."""
    return Path(argv[argv.index("--run-dir") + 1])


def checkpoint_curve(run_dir: Path, offset: float, episodes: int) -> list[tuple[int, float, float]]:
    """``(step, time_s since BENCH_T0, eval mean)`` of every checkpoint, evaluated now."""
    from ppokit.plotting import read_csv
    from ppokit.rl.ppo import PPO

    metrics = read_csv(run_dir / "metrics.csv")
    when = dict(zip(metrics["time/total_timesteps"], metrics["time/elapsed_s"]))
    curve = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*")):
        step = int(ckpt.name.split("_")[1])
        if float(step) not in when:  # an incomplete checkpoint or a step without a metrics row
            continue
        model = PPO.load(ckpt, tensorboard=False)
        result = model.evaluate(episodes)
        model.close()
        curve.append((step, round(when[float(step)] + offset, 4), result["mean_return"]))
    return curve


def main(argv: list[str]) -> int:
    from ppokit.cli import main as ppokit_main
    from ppokit.plotting import read_csv
    from ppokit.tracking import PROCESS_START

    rc = ppokit_main(["train", *argv])
    run_dir = run_dir_from(argv)
    offset = PROCESS_START - T0
    metrics = read_csv(run_dir / "metrics.csv")
    bench = {
        "process_start_offset_s": offset,
        "fps": metrics["time/fps"][-1],
        "total_timesteps": int(metrics["time/total_timesteps"][-1]),
        "train_end_s": metrics["time/elapsed_s"][-1] + offset,
    }
    if "--no-eval" not in argv:
        curve = checkpoint_curve(run_dir, offset, episodes=20)
        with open(run_dir / "bench_checkpoints.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "time_s", "eval_mean"])
            w.writerows(curve)
    (run_dir / "bench.json").write_text(json.dumps(bench, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
