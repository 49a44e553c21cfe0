"""Where a ppokit CartPole run spends its time: start-up imports, then cProfile of ``ppokit train``.

    .venv/bin/python benchmarks/micro/profile_ppokit.py                                  # CartPole preset
    .venv/bin/python benchmarks/micro/profile_ppokit.py --config configs/CartPole-v1-fast.yaml

Run each in a fresh process (imports are cached after the first). Prints the import times of the
heavy modules, then the share of the training's wall time in the parts of the loop (cumulative
cProfile times of the functions that make them up; the parts overlap where one calls another, as
the indentation shows), and writes the full profile to ``benchmarks/out/profile/<name>.prof`` for
``python -m pstats`` or snakeviz. cProfile slows Python-heavy code more than torch kernels, so read
the shares as an upper bound on the Python overhead. On a machine busy with other work the shares
still hold roughly; the seconds do not.
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import importlib  # noqa: E402
import pstats  # noqa: E402
from pathlib import Path  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "out"

# Modules in the order `ppokit train` pulls them in; each time is what that import *adds*.
IMPORTS = [
    "numpy",
    "torch",
    "gymnasium",
    "ppokit.rl.ppo",
    "ppokit.plotting",  # matplotlib, imported by the CLI's runner
    "rich.progress",
    "torch.utils.tensorboard",  # imported by Tracker when tensorboard: true
    "gymnasium.envs.classic_control.cartpole",
]

# (label, function name as pstats shows it: "file:line(function)" must end with this), nesting level.
PARTS = [
    ("learn() total", "ppo.py", "(learn)", 0),
    ("rollout: Collector.collect", "rollout.py", "(collect)", 1),
    ("actor forward (policy_output)", "networks.py", "(policy_output)", 2),
    ("action sampling (sample)", "networks.py", "(sample)", 2),
    ("critic values, one batch per rollout (value)", "networks.py", "(value)", 2),
    ("env.step (numpy CartPole)", "cartpole.py", "(step)", 2),
    ("episode stats (EpisodeStats.add)", "rollout.py", "(add)", 2),
    ("non-finite checks (_check_finite)", "rollout.py", "(_check_finite)", 2),
    ("update: PPO.update", "update.py", "(update)", 1),
    ("forward with saved activations (infer)", "manual_grad.py", "(forward)", 2),
    ("loss terms + their gradient (loss_and_grads)", "manual_grad.py", "(loss_and_grads)", 2),
    ("optimizer step incl. backward (_step)", "update.py", "(_step)", 2),
    ("MLP backward (ManualGrad.backward)", "manual_grad.py", "(backward)", 3),
    ("clip_grad_norm", "optim.py", "(clip_grad_norm)", 3),
    ("Adam step (FlatAdam.step)", "optim.py", "(step)", 3),
    ("GAE + flatten (_flatten_rollout)", "update.py", "(_flatten_rollout)", 2),
    ("logging: PPO._log (CSV + TensorBoard)", "ppo.py", "(_log)", 1),
    ("checkpoints (maybe_checkpoint)", "state.py", "(maybe_checkpoint)", 1),
    ("progress bar update", "tracking.py", "(update)", 1),
]


def import_times() -> list[tuple[str, float]]:
    """Seconds each module adds to start-up, in order (already-imported parts cost nothing)."""
    out = []
    for name in IMPORTS:
        t = time.perf_counter()
        importlib.import_module(name)
        out.append((name, time.perf_counter() - t))
    return out


def cumulative(stats: pstats.Stats, file_end: str, func_end: str) -> float:
    """Cumulative time summed over the functions whose file and name match."""
    total = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.endswith(file_end) and f"({name})" == func_end:
            total += ct
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/CartPole-v1.yaml")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    name = Path(args.config).stem
    out = OUT / "profile"
    out.mkdir(parents=True, exist_ok=True)

    print(f"start-up: interpreter + this script's imports {time.time() - T0:.2f}s, then:")
    for module, secs in import_times():
        print(f"  import {module:42s} {secs:6.2f}s")

    from ppokit.cli import main as ppokit_main

    run_dir = out / f"{name}-s{args.seed}-{time.strftime('%H%M%S')}"
    argv = ["train", "--config", args.config, "--seed", str(args.seed), "--run-dir", str(run_dir)]
    profiler = cProfile.Profile()
    t = time.perf_counter()
    profiler.runcall(ppokit_main, [*argv, "--no-progress"])
    wall = time.perf_counter() - t
    profiler.dump_stats(out / f"{name}.prof")
    stats = pstats.Stats(profiler)
    learn = cumulative(stats, "ppo.py", "(learn)")
    print(f"\n`ppokit train` under cProfile: {wall:.2f}s in all, of which learn() {learn:.2f}s")
    print(f"{'part of learn()':48s} {'seconds':>8s} {'share':>7s}")
    for label, file_end, func, level in PARTS:
        secs = cumulative(stats, file_end, func)
        print(f"{'  ' * level + label:48s} {secs:8.2f} {secs / max(learn, 1e-9):7.1%}")
    print(f"\nfull profile: {out / f'{name}.prof'}  (python -m pstats {out / f'{name}.prof'})")
    stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
