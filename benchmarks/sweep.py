"""Try preset variants over seeds, timed the way the side-by-side benchmark times ppokit.

    .venv/bin/python benchmarks/sweep.py --config configs/CartPole-v1-fast.yaml --seeds 0 1 2 \
        --variant "64x32: num_envs=64 n_steps=32" --variant "128x16: num_envs=128 n_steps=16"
    .venv/bin/python benchmarks/sweep.py --config configs/HalfCheetah-v5-fast.yaml --steps 100000 \
        --variant "preset:" --variant "mb64: batch_size=64 learning_rate=0.0003"

Each run is ``benchmarks/ppokit_run.py`` (that is ``ppokit train``) in a fresh process with the
variant's ``--set`` overrides, no checkpoints, and its usual final 20-episode evaluation. One line of
JSON per run: seconds from process launch to a last-100 training mean of 475 (CartPole; ``null`` when
never reached), steps/s of the run, final evaluation. Seeds are the outer loop, so a change of machine
load touches every variant alike. This is how the fast presets in configs/ were chosen
(docs/benchmarks_presets.md); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import ROOT, launch
from parse import parse_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="Base preset (YAML).")
    ap.add_argument(
        "--variant", action="extend", nargs="+", required=True, help='"label: key=value key=value ..."'
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="total_timesteps (default: the preset's).")
    args = ap.parse_args(argv)
    variants = []
    for v in args.variant:
        label, _, sets = v.partition(":")
        variants.append((label.strip(), sets.split()))
    base = Path(tempfile.mkdtemp(prefix="ppokit-sweep-"))
    for seed in args.seeds:
        for label, sets in variants:
            out = base / f"{label}-s{seed}"
            cmd = [sys.executable, str(ROOT / "benchmarks" / "ppokit_run.py"), "--run-dir", str(out)]
            cmd += ["--seed", str(seed), "--config", args.config, "--no-progress"]
            extra = ["checkpoint_every=1000000000", *sets]
            extra += [f"total_timesteps={args.steps}"] if args.steps else []
            for kv in extra:
                cmd += ["--set", kv]
            proc = launch(cmd)
            if proc.rc != 0:
                print(json.dumps({"label": label, "seed": seed, "error": proc.stderr[-500:]}), flush=True)
                continue
            r = parse_run("ppokit", out)
            row = {"label": label, "seed": seed, "set": sets, "time_to_475_s": r.get("time_to_target")}
            row.update(steps_per_s=round(r["fps"]), eval_mean=r.get("eval_mean"), eval_std=r.get("eval_std"))
            print(json.dumps(row), flush=True)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
