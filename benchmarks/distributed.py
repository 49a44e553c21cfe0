"""Steps/s of ppokit with 1 and 2 torchrun processes on this machine (CartPole and HalfCheetah).

    python benchmarks/distributed.py [--steps-cartpole N] [--steps-halfcheetah N] [--out FILE]

Each configuration is `torchrun --standalone --nproc_per_node P -m ppokit train --env ENV
--total-timesteps N --no-eval --no-progress`; steps/s is time/fps of the last update (all processes'
steps together, from the start of learning). Results go to benchmarks/out/distributed.json and a
Markdown table (default docs/benchmarks_distributed.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, ROOT, git_commit, machine, save_json, today, versions

from ppokit.plotting import read_csv

EXPLAIN = (
    "Each process runs one torch thread and its own environments; every minibatch step waits for an "
    "all-reduce of the gradients over gloo (and one of three numbers for advantage normalisation). On a "
    "2-core machine the second process takes the core the first one's collectives and environments "
    "would use, so a ratio below 1 means: on this machine, raise num_envs in one process instead; "
    "torchrun pays off with more cores, GPUs or machines."
)


def run(env: str, nproc: int, steps: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [
            "torchrun",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "ppokit",
            "train",
            "--env",
            env,
            "--total-timesteps",
            str(steps),
            "--run-dir",
            str(run_dir),
            "--no-eval",
            "--no-progress",
            "--device",
            device,
        ]
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", *cmd[1:]],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        m = read_csv(run_dir / "metrics.csv")
        return {
            "env": env,
            "nproc": nproc,
            "device": device,
            "steps": int(m["time/total_timesteps"][-1]),
            "fps": m["time/fps"][-1],
            "command": " ".join(cmd[:-2] + ["--device", device]),
        }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps-cartpole", type=int, default=100_000, help="Steps per CartPole run.")
    p.add_argument("--steps-halfcheetah", type=int, default=40_960, help="Steps per HalfCheetah run.")
    p.add_argument("--nprocs", type=int, nargs="*", default=[1, 2], help="Process counts to compare.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (processes share the one GPU).")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks_distributed.md")
    args = p.parse_args(argv)
    rows = [
        run(env, n, steps, args.device)
        for env, steps in (("CartPole-v1", args.steps_cartpole), ("HalfCheetah-v5", args.steps_halfcheetah))
        for n in args.nprocs
    ]
    save_json(OUT / "distributed.json", {"rows": rows, "date": today(), "machine": machine()})
    base = {r["env"]: r["fps"] for r in rows if r["nproc"] == args.nprocs[0]}
    lines = [
        "## Data-parallel scaling (torchrun)",
        "",
        f"{today()}; {machine()}; {versions(['ppokit', 'torch', 'gymnasium', 'mujoco'])}; "
        f"commit {git_commit(short=True)}. Produced by `python benchmarks/distributed.py`.",
        "",
        "| env | processes | device | steps | steps/s | vs 1 process | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['nproc']} | {r['device']} | {r['steps']:,} | {r['fps']:,.0f} | "
            f"{r['fps'] / base[r['env']]:.2f}x | `{r['command']}` |"
        )
    lines += ["", EXPLAIN]
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
