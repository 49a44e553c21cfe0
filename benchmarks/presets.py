"""Train presets on single seeds and write a quick table (benchmarks/out/presets.md by default).

The published, multi-seed results (docs/results.md) come from benchmarks/suite.py instead.

    python benchmarks/presets.py                       # all presets, seed 0
    python benchmarks/presets.py --envs CartPole-v1 --seeds 0 1 2
    python benchmarks/presets.py --adopt runs/HalfCheetah-v5-ppo-...   # record a finished preset run

Each run is `ppokit train --env ENV --seed SEED --run-dir ... --no-progress`; its result is kept in
benchmarks/out/presets/ENV-sSEED.json, and the table is regenerated from all such files.
`--adopt` records an existing run directory instead, after checking its config is the preset's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import OUT, ROOT, git_commit, machine, save_json, today, versions

from ppokit.plotting import read_csv
from ppokit.rl.config import PPOConfig

TARGETS = {"CartPole-v1": 475.0, "Pendulum-v1": -250.0, "HalfCheetah-v5": 1500.0}  # quick sanity bars
PACKAGES = ["ppokit", "torch", "gymnasium", "mujoco", "numpy"]


def summarise(
    run_dir: Path, env: str, seed: int, wall_s: float | None, command: str, commit: str, note: str
) -> dict:
    """One result record from a finished run directory."""
    result = json.loads((run_dir / "eval.json").read_text())
    metrics = read_csv(run_dir / "metrics.csv")
    return {
        "env": env,
        "seed": seed,
        "command": command,
        "date": today(),
        "machine": machine(),
        "versions": versions(PACKAGES),
        "commit": commit,
        "note": note,
        "total_timesteps": int(metrics["time/total_timesteps"][-1]),
        "train_s": metrics["time/elapsed_s"][-1],
        "wall_s": wall_s,
        "fps": metrics["time/fps"][-1],
        "mean_return": result["mean_return"],
        "std_return": result["std_return"],
        "episodes": result["episodes"],
        "last100_train_return": metrics["rollout/ep_rew_mean"][-1],
        "target": TARGETS.get(env),
    }


def run_preset(env: str, seed: int, note: str) -> dict:
    commit = git_commit()
    run_dir = (OUT / "preset-runs" / f"{env}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}").relative_to(ROOT)
    cmd = ["ppokit", "train", "--env", env, "--seed", str(seed), "--run-dir", str(run_dir), "--no-progress"]
    start = time.time()
    subprocess.run([sys.executable, "-m", "ppokit", *cmd[1:]], check=True, cwd=ROOT)
    return summarise(ROOT / run_dir, env, seed, time.time() - start, " ".join(cmd), commit, note)


def adopt(run_dir: Path, note: str) -> dict:
    """Record a finished run made with a preset (its config must equal the preset but for the seed)."""
    cfg = PPOConfig.load_yaml(run_dir / "config.yaml")
    preset = PPOConfig.from_dict(
        {**yaml.safe_load((ROOT / "configs" / f"{cfg.env_id}.yaml").read_text()), "seed": cfg.seed}
    )
    if preset != cfg:
        raise SystemExit(f"{run_dir}: config differs from configs/{cfg.env_id}.yaml; not a preset run")
    command = f"ppokit train --env {cfg.env_id} --seed {cfg.seed} --run-dir {run_dir} --no-progress"
    return summarise(run_dir, cfg.env_id, cfg.seed, None, command, git_commit(), note)


def write_markdown(path: Path) -> None:
    records = [json.loads(p.read_text()) for p in sorted((OUT / "presets").glob("*.json"))]
    lines = [
        "# Preset results",
        "",
        "Mean return of 20 deterministic evaluation episodes after training with each preset in `configs/`,",
        "and the wall-clock time. Regenerate with `python benchmarks/presets.py` (see its docstring).",
        "`train s` is time/elapsed_s at the last update (seconds since the process started, so it",
        "includes start-up); `wall s` is the whole command including the final evaluation.",
        "",
        "| env | seed | steps | eval mean ± std | target | train s | wall s | steps/s | date | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ok = "✅" if r["target"] is None or r["mean_return"] >= r["target"] else "❌"
        wall = f"{r['wall_s']:.0f}" if r["wall_s"] is not None else "-"
        score = f"{r['mean_return']:.1f} ± {r['std_return']:.1f}"
        lines.append(
            f"| {r['env']} | {r['seed']} | {r['total_timesteps']:,} | {score} | ≥ {r['target']} {ok} "
            f"| {r['train_s']:.0f} | {wall} | {r['fps']:,.0f} | {r['date']} | `{r['command']}` |"
        )
    lines += ["", "Machines and versions:", ""]
    for r in records:
        note = f" Note: {r['note']}" if r.get("note") else ""
        lines.append(
            f"- {r['env']} seed {r['seed']}: {r['machine']}; {r['versions']}; commit {r['commit']}.{note}"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="*", default=list(TARGETS), help="Presets to run.")
    p.add_argument("--seeds", nargs="*", type=int, default=[0], help="Seeds to run.")
    p.add_argument("--adopt", type=Path, help="Record this finished preset run instead of training.")
    p.add_argument("--note", default="", help="A remark stored with the results (e.g. machine load).")
    p.add_argument("--out", type=Path, default=OUT / "presets.md", help="Markdown file to write.")
    args = p.parse_args()
    if args.adopt:
        records = [adopt(args.adopt, args.note)]
    else:
        records = [run_preset(env, seed, args.note) for env in args.envs for seed in args.seeds]
    for r in records:
        save_json(OUT / "presets" / f"{r['env']}-s{r['seed']}.json", r)
    write_markdown(args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
