"""One ppokit run for the side-by-side benchmark: ``ppokit train ARGS...`` in this process, then
the offline evaluation of its checkpoints.

    BENCH_T0=$(date +%s.%N) .venv/bin/python benchmarks/ppokit_run.py --run-dir DIR --seed 0 \
        --config configs/CartPole-v1.yaml --set checkpoint_every=10000 --set keep_checkpoints=1000

It is exactly the ``ppokit train`` command (``ppokit.cli.main``) a user runs. ppokit's own files
are used as they are: ``episodes.csv`` and ``metrics.csv`` time everything from
``ppokit.tracking.PROCESS_START`` (set when ppokit is imported); this driver adds
``bench.json`` with ``process_start_offset_s = PROCESS_START - BENCH_T0``, so the harness can count
from the same launch instant for every library (interpreter start-up and imports included).

Options of this driver (taken out before the rest goes to ``ppokit train``):

- ``--curve-episodes N`` (default 20; 0: none): after training (outside the timed part) each
  checkpoint in ``RUN_DIR/checkpoints`` is evaluated with N deterministic episodes and written to
  ``bench_checkpoints.csv`` (``step, time_s, eval_mean``, time counted from BENCH_T0).
- ``--curve-target X``: stop evaluating checkpoints after the first whose mean reaches X.
- ``--time-limit-s S``: a wall-clock cap counted from BENCH_T0: at S seconds this process sends
  itself SIGTERM, which ``ppokit train`` answers by stopping after the current update with a
  checkpoint (exit 143); the driver then records ``capped: true`` and exits 0. A cap that falls
  after the training loop (final save, evaluation) is ignored.
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import csv  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

DRIVER_OPTIONS = {"--curve-episodes": int, "--curve-target": float, "--time-limit-s": float}


def split_options(argv: list[str]) -> tuple[dict, list[str]]:
    """This driver's options (see the module docstring) and the arguments for ``ppokit train``."""
    mine: dict = {"--curve-episodes": 20, "--curve-target": None, "--time-limit-s": 0.0}
    rest, i = [], 0
    while i < len(argv):
        if argv[i] in DRIVER_OPTIONS:
            mine[argv[i]] = DRIVER_OPTIONS[argv[i]](argv[i + 1])
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return mine, rest


def run_dir_from(argv: list[str]) -> Path:
    """The value of ``--run-dir`` (the harness always passes one)."""
    return Path(argv[argv.index("--run-dir") + 1])


def checkpoint_curve(
    run_dir: Path, offset: float, episodes: int, target: float | None = None
) -> list[tuple[int, float, float]]:
    """``(step, time_s since BENCH_T0, eval mean)`` of every checkpoint, evaluated now, in step
    order; with ``target``, up to the first that reaches it."""
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
        if target is not None and result["mean_return"] >= target:
            break
    return curve


def main(argv: list[str]) -> int:
    from ppokit.cli import main as ppokit_main
    from ppokit.plotting import read_csv
    from ppokit.tracking import PROCESS_START

    opts, argv = split_options(argv)
    cap = opts["--time-limit-s"]
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGTERM)  # ppokit's handler: stop after this update, checkpoint

    timer = threading.Timer(max(cap - (time.time() - T0), 0.0), stop) if cap else None
    if timer is not None:
        # outside learn() (set-up, final save) the cap must not kill the process: ignore it there;
        # ppokit's StopOnSignal replaces this handler while it trains and puts it back after
        signal.signal(signal.SIGTERM, lambda *_: None)
        timer.daemon = True
        timer.start()
    rc = ppokit_main(["train", *argv])
    if timer is not None:
        timer.cancel()
    capped = fired.is_set() and rc == 128 + signal.SIGTERM
    run_dir = run_dir_from(argv)
    offset = PROCESS_START - T0
    metrics = read_csv(run_dir / "metrics.csv")
    bench = {
        "process_start_offset_s": offset,
        "fps": metrics["time/fps"][-1],
        "total_timesteps": int(metrics["time/total_timesteps"][-1]),
        "train_end_s": metrics["time/elapsed_s"][-1] + offset,
        "torch_threads_seen": sorted({int(t) for t in metrics.get("train/torch_threads", []) if t == t}),
        "capped": capped,
        "time_limit_s": cap or None,
    }
    if opts["--curve-episodes"]:
        curve = checkpoint_curve(run_dir, offset, opts["--curve-episodes"], opts["--curve-target"])
        with open(run_dir / "bench_checkpoints.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "time_s", "eval_mean"])
            w.writerows(curve)
    (run_dir / "bench.json").write_text(json.dumps(bench, indent=1))
    return 0 if capped else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
