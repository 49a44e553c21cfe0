"""Pong steps/s: ppokit (``configs/ALE/Pong-v5.yaml``: ALE's C++ vector env, uint8 rollout, NatureCNN)
against Stable-Baselines3's ``CnnPolicy`` (``benchmarks/peers/sb3_atari_run.py``: SB3's Atari wrappers
and VecFrameStack), same hyperparameters (CleanRL's ``ppo_atari.py``), one torch thread each.

    .venv/bin/python benchmarks/atari_speed.py --repeats 3 --total-timesteps 3072
    .venv/bin/python benchmarks/atari_speed.py --contestants ppokit ppokit-bf16 sb3   # + bf16 autocast

Runs alternate (ppokit, sb3, ppokit, sb3, ...) so that a change in the load of a shared machine hits
both; each run is its own process and is timed around ``learn()`` alone (no start-up, no evaluation),
in wall-clock seconds and in the process's CPU seconds (all its threads: ALE's, torch's), which
depend less on what else the machine runs.
Writes ``benchmarks/out/atari_speed/result.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, ROOT, machine, versions

PEERS_PY = ROOT / "benchmarks" / ".peers" / "bin" / "python"


def ppokit_once(total: int, seed: int, bf16: bool) -> dict:
    """One ppokit run in this process's interpreter (called via ``--ppokit-once``)."""
    import torch

    from ppokit.config import read_yaml_mapping
    from ppokit.rl.ppo import PPO

    cfg = read_yaml_mapping(ROOT / "configs" / "ALE" / "Pong-v5.yaml")
    cfg.update(seed=seed, tensorboard=False, bf16=bf16)
    model = PPO(cfg["env_id"], cfg)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(total)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    model.close()
    return {
        "library": "ppokit-bf16" if bf16 else "ppokit",
        "steps": model.num_timesteps,
        "learn_s": elapsed,
        "steps_per_s": model.num_timesteps / elapsed,
        "cpu_s": cpu,
        "steps_per_cpu_s": model.num_timesteps / cpu,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--total-timesteps", type=int, default=3072)
    p.add_argument("--ppokit-once", metavar="OUT.json")
    p.add_argument("--bf16", action="store_true", help="With --ppokit-once: bfloat16 autocast (config bf16).")
    p.add_argument(
        "--contestants",
        nargs="+",
        default=["ppokit", "sb3"],
        choices=("ppokit", "ppokit-bf16", "sb3"),
        help="ppokit-bf16: the same preset with bf16: true (bfloat16 autocast; AMX/AVX512-BF16 CPUs).",
    )
    args = p.parse_args(argv)
    if args.ppokit_once:
        Path(args.ppokit_once).write_text(json.dumps(ppokit_once(args.total_timesteps, 0, args.bf16)))
        return
    out = OUT / "atari_speed"
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    for i in range(args.repeats):
        for lib in args.contestants:
            path = out / f"{lib}-{i}.json"
            if lib.startswith("ppokit"):
                cmd = [sys.executable, __file__, "--ppokit-once", str(path)] + ["--bf16"] * (
                    lib == "ppokit-bf16"
                )
            else:  # it writes DIR/result.json
                path = out / f"{lib}-{i}" / "result.json"
                cmd = [
                    str(PEERS_PY),
                    str(ROOT / "benchmarks" / "peers" / "sb3_atari_run.py"),
                    "--out",
                    str(path.parent),
                ]
            cmd += ["--total-timesteps", str(args.total_timesteps)]
            subprocess.run(cmd, check=True, cwd=ROOT)
            runs.append(json.loads(path.read_text()))
            print(f"repeat {i} {lib}: {runs[-1]['steps_per_s']:.1f} steps/s", flush=True)
    summary = {}
    for lib in args.contestants:
        sps = [r["steps_per_s"] for r in runs if r["library"] == lib]
        cpu = [r["steps_per_cpu_s"] for r in runs if r["library"] == lib]
        summary[lib] = {
            "steps_per_s": sps,
            "median": statistics.median(sps),
            "steps_per_cpu_s": cpu,
            "median_per_cpu_s": statistics.median(cpu),
        }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "versions": versions(["torch", "gymnasium", "ale-py", "numpy"]),
        "sb3_versions": next((r["versions"] for r in runs if r["library"] == "sb3"), None),
        "total_timesteps": args.total_timesteps,
        "summary": summary,
        "ratios_to_sb3": {
            lib: {
                "wall": s["median"] / summary["sb3"]["median"],
                "per_cpu_s": s["median_per_cpu_s"] / summary["sb3"]["median_per_cpu_s"],
            }
            for lib, s in summary.items()
            if lib != "sb3" and "sb3" in summary
        },
        "runs": runs,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print("| library | steps/s (wall) per repeat | median | steps per CPU-second per repeat | median |")
    print("|---|---|---|---|---|")
    for lib, s in summary.items():
        wall = ", ".join(f"{x:.1f}" for x in s["steps_per_s"])
        cpu = ", ".join(f"{x:.1f}" for x in s["steps_per_cpu_s"])
        print(f"| {lib} | {wall} | {s['median']:.1f} | {cpu} | {s['median_per_cpu_s']:.1f} |")
    for lib, r in result["ratios_to_sb3"].items():
        print(f"ratio of medians ({lib} / sb3): wall {r['wall']:.2f}, per CPU-second {r['per_cpu_s']:.2f}")


if __name__ == "__main__":
    main()
