"""Pong's learning curve from one `ppokit train` run: every checkpoint evaluated (deterministic, full
games), beside the training episodes' running mean and the run's clock; writes a Markdown table and
a plot (issue 12: "mean evaluation return >= 18 within CleanRL's 10M-frame budget").

    ppokit train --env ALE/Pong-v5 --total-timesteps 2500000 --set bf16=true \\
        --set checkpoint_every=102400 --set keep_checkpoints=100 --run-dir benchmarks/out/pong-bf16
    python benchmarks/pong_curve.py benchmarks/out/pong-bf16 --episodes 10

Resumable: each checkpoint's evaluation is appended to ``<run>/pong_eval.jsonl`` when it finishes and
is not redone. Evaluation runs outside training (it costs no training time). The wall-clock column is
the training's own ``time/elapsed_s`` at that step, summed over the processes of a resumed run (each
`ppokit resume` starts its clock at 0; work redone after a resume counts), less the time it was
stopped with SIGSTOP before the checkpoint was written when ``--pauses`` names the records of a
``side_by_side.py --load-pid`` run that used it as the load. Several runs (seeds) share one plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from common import pyplot, save_figure, table_head

FRAMES_PER_STEP = 4  # frameskip 4 (configs/ALE/Pong-v5.yaml)


def training_mean(episodes: list[dict], step: int, window: int = 100) -> float | None:
    done = [float(e["return"]) for e in episodes if int(e["step"]) <= step][-window:]
    return sum(done) / len(done) if done else None


def elapsed_at(metrics: list[dict], step: int) -> float | None:
    """Training seconds up to the last metrics row at or before ``step``. The rows are in the order
    written; a clock that goes back marks a resumed process, whose clock adds to the ones before."""
    before, last, t = 0.0, 0.0, None
    for m in metrics:
        e = float(m["time/elapsed_s"])
        if e < last:
            before += last
        last = e
        if int(float(m["time/total_timesteps"])) <= step:
            t = before + e
    return t


def paused_between(pauses: list[list[float]], start: float, end: float) -> float:
    """Seconds of the ``[stopped, continued]`` epoch intervals between ``start`` and ``end``."""
    return sum(max(0.0, min(p[-1] if len(p) == 2 else end, end) - max(p[0], start)) for p in pauses)


def evaluate_all(run: Path, episodes: int, threads: int) -> list[dict]:
    import torch

    from ppokit import PPO

    torch.set_num_threads(threads)
    out = run / "pong_eval.jsonl"
    done = {r["checkpoint"]: r for r in map(json.loads, out.read_text().splitlines())} if out.exists() else {}
    for ckpt in sorted((run / "checkpoints").glob("step_*")):
        if ckpt.name in done:
            continue
        result = PPO.load(ckpt).evaluate(episodes=episodes, deterministic=True)
        row = {"checkpoint": ckpt.name, "step": int(ckpt.name.split("_")[1]), **result}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[ckpt.name] = row
        print(f"{ckpt.name}: {result['mean_return']:.2f} +- {result['std_return']:.2f}", flush=True)
    return sorted(done.values(), key=lambda r: r["step"])


def table(run: Path, evals: list[dict], target: float, pauses: list[list[float]]) -> str:
    episodes = list(csv.DictReader((run / "episodes.csv").open()))
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    lines = table_head(
        "agent steps | frames | training wall-clock | mean of the last 100 training episodes "
        "| evaluation (deterministic)"
    )
    for r in evals:
        s, t, m = r["step"], elapsed_at(metrics, r["step"]), training_mean(episodes, r["step"])
        if t is not None:  # the run starts when its config is written; the checkpoint's files end it
            ckpt = run / "checkpoints" / r["checkpoint"]
            t -= paused_between(pauses, (run / "config.yaml").stat().st_mtime, ckpt.stat().st_mtime)
        mark = " **≥ target**" if r["mean_return"] >= target else ""
        lines.append(
            f"| {s:,} | {s * FRAMES_PER_STEP / 1e6:.2f}M | {t / 60:.0f} min | {m:.2f} | "
            f"{r['mean_return']:.2f} ± {r['std_return']:.2f}{mark} |"
            if t is not None and m is not None
            else f"| {s:,} | {s * FRAMES_PER_STEP / 1e6:.2f}M | - | - | {r['mean_return']:.2f} |"
        )
    return "\n".join(lines)


def plot(curves: list[tuple[Path, list[dict]]], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for i, (run, evals) in enumerate(curves):
        episodes = list(csv.DictReader((run / "episodes.csv").open()))
        steps = [int(e["step"]) for e in episodes]
        means = [training_mean(episodes, s) for s in steps]
        name = f"{run.name}: " if len(curves) > 1 else ""
        color = f"C{i}"
        ax.plot(
            [s * FRAMES_PER_STEP / 1e6 for s in steps],
            means,
            color=color,
            alpha=0.6,
            label=f"{name}training, mean of last 100 episodes",
        )
        ax.plot(
            [r["step"] * FRAMES_PER_STEP / 1e6 for r in evals],
            [r["mean_return"] for r in evals],
            "o-",
            color=color,
            markersize=3,
            label=f"{name}checkpoint evaluation (deterministic)",
        )
    ax.axhline(18, color="grey", linestyle=":", label="target 18")
    ax.set_xlabel("frames (millions)")
    ax.set_ylabel("return")
    ax.set_title("ppokit, configs/ALE/Pong-v5.yaml with bf16, 2 CPU cores")
    ax.legend(loc="lower right", fontsize=7)
    save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="Run directories of `ppokit train --env ALE/Pong-v5`.")
    p.add_argument("--episodes", type=int, default=10, help="Evaluation games per checkpoint.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads of the evaluation.")
    p.add_argument("--target", type=float, default=18.0)
    p.add_argument("--plot", type=Path, default=Path("docs/img/pong_curve.png"))
    p.add_argument("--pauses", type=Path, help="records.json of a side_by_side.py run with --load-pid.")
    a = p.parse_args(argv)
    pauses = json.loads(a.pauses.read_text())["meta"].get("external_pauses", []) if a.pauses else []
    print(f"stopped {paused_between(pauses, 0.0, time.time()):.0f} s in all" if pauses else "never stopped")
    curves = []
    for run in a.runs:
        evals = evaluate_all(run, a.episodes, a.threads)
        print(f"\n{run}\n\n" + table(run, evals, a.target, pauses))
        curves.append((run, evals))
    plot(curves, a.plot)


if __name__ == "__main__":
    main()
