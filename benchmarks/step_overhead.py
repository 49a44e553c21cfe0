"""Issue 33's per-step study: what a 1-env rollout step costs around the simulator's own step.

    python benchmarks/bench.py run specs/step_overhead.yaml
    python benchmarks/step_overhead.py --envs HalfCheetah-v5 --steps 1024 --repeats 1 \
        --contestant before=/path/to/old/src --contestant after=src

For each env, repeat and contestant (a ppokit ``src`` tree; contestants interleaved A, B, A, B within
each repeat, so drift in the machine's load touches all alike) one fresh process measures, with one
torch thread:

- ``gym_us``: Gymnasium's own ``env.step`` (``gymnasium.make(env_id)``, random actions, reset when an
  episode ends), microseconds per step;
- ``rollout_us``: ppokit's ``Collector.collect`` of the env's preset forced to one env and ``--steps``
  steps (after one warm-up rollout), per step;
- the split of a second rollout into ``act`` (the policy's per-step act), ``env`` (the vector env's
  step with ppokit's wrappers), ``norm`` (observation normalisation into the policy's input) and
  ``rest`` (storage, reward scaling, finiteness checks, episode statistics); the split's timers add
  a little to the total.

Each record carries the load average before and after it, the machine, versions and commits. The
report is a Markdown table of medians over repeats (min-max in brackets) with ``rollout / gym``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, provenance, save_json


def child(env_id: str, steps: int) -> dict:
    """The measurements of one process (run with the contestant's tree first on ``sys.path``)."""
    import gymnasium as gym
    import torch
    import yaml

    from ppokit.rl.ppo import PPO
    from ppokit.rl.presets import find_preset

    torch.set_num_threads(1)
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    t = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    gym_us = (time.perf_counter() - t) / steps * 1e6
    env.close()
    cfg = yaml.safe_load(find_preset(env_id).read_text())
    cfg.update(num_envs=1, n_steps=steps, tensorboard=False, torch_threads=1)
    cfg["batch_size"] = min(cfg.get("batch_size", 64), steps)  # a tiny smoke-test rollout stays valid
    model = PPO(config=cfg)
    c = model.collector
    c.collect(model.buffer)  # warm-up
    t = time.perf_counter()
    c.collect(model.buffer)
    rollout_us = (time.perf_counter() - t) / steps * 1e6
    timers = dict.fromkeys(("act", "env", "norm"), 0.0)

    def timed(fn, key):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            timers[key] += time.perf_counter() - t0
            return out

        return call

    c._act = timed(c._act, "act")
    c._normalize = timed(c._normalize, "norm")
    c.venv.step = timed(c.venv.step, "env")
    if hasattr(c, "_numpy_actor"):  # rl/fast/act.py (issue 33): the act is this object's call
        make = c._numpy_actor
        c._numpy_actor = lambda: (lambda a: a and timed(a, "act"))(make())
    t = time.perf_counter()
    c.collect(model.buffer)
    split_total = (time.perf_counter() - t) / steps * 1e6
    split = {k: v / steps * 1e6 for k, v in timers.items()}
    split["rest"] = split_total - sum(split.values())
    model.close()
    return {"gym_us": gym_us, "rollout_us": rollout_us, "split_us": split}


def run_one(env_id: str, steps: int, pythonpath: Path) -> dict:
    """``child`` in a fresh process importing ppokit from ``pythonpath``."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import step_overhead as s; "
        f"print('RESULT ' + json.dumps(s.child({env_id!r}, {steps})))"
    )
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{env_id} with {pythonpath} failed:\n{proc.stderr[-2000:]}")
    record = json.loads(lines[-1][len("RESULT ") :])
    record.update(load_before=load_before, load_after=os.getloadavg()[0])
    return record


def report(records: list[dict]) -> str:
    """The Markdown table of medians (min-max) per env and contestant."""
    med = lambda xs: f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"  # noqa: E731
    lines = [
        "| env | contestant | Gymnasium step, us | ppokit rollout step, us | rollout / gym | act | env step"
        " with wrappers | obs norm | rest | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["env"], r["contestant"]) for r in records}, key=lambda k: (k[0], k[1]))
    for env_id, name in keys:
        rs = [r for r in records if (r["env"], r["contestant"]) == (env_id, name)]
        ratio = [r["rollout_us"] / r["gym_us"] for r in rs]
        split = [med([r["split_us"][k] for r in rs]) for k in ("act", "env", "norm", "rest")]
        loads = [r["load_before"] for r in rs] + [r["load_after"] for r in rs]
        gym_us, rollout_us = med([r["gym_us"] for r in rs]), med([r["rollout_us"] for r in rs])
        lines.append(
            f"| {env_id} | {name} | {gym_us} | {rollout_us} | "
            f"{statistics.median(ratio):.2f}x | {' | '.join(split)} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    ap.add_argument("--steps", type=int, default=4096, help="Steps per timed rollout.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--contestant",
        action="extend",
        nargs="+",
        default=None,
        help="LABEL=SRC ... (default: this tree's src).",
    )
    ap.add_argument("--out", default="benchmarks/out/step_overhead", help="Folder of the raw records.")
    args = ap.parse_args(argv)
    contestants = [c.split("=", 1) for c in (args.contestant or ["this=src"])]
    out = ROOT / args.out
    records = []
    for rep in range(args.repeats):
        for env_id in args.envs:
            for label, src in contestants:
                path = (ROOT / src).resolve() if not Path(src).is_absolute() else Path(src)
                r = run_one(env_id, args.steps, path)
                r.update(
                    env=env_id,
                    contestant=label,
                    repeat=rep,
                    **provenance(path, ("torch", "gymnasium", "mujoco", "numpy")),
                )
                save_json(out / f"{env_id}-{label}-rep{rep}.json", r)
                records.append(r)
                print(
                    json.dumps({k: r[k] for k in ("env", "contestant", "gym_us", "rollout_us", "split_us")}),
                    flush=True,
                )
    print(report(records), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
