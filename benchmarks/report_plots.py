"""The plots of docs/benchmarks.md: evaluation return against wall-clock seconds (goals 2 and 4) and
CNN steps/s against num_envs and width (goal 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGETS = {"CartPole-v1": 475.0, "HalfCheetah-v5": 3000.0, "Hopper-v5": 2500.0}
STYLE = {"idle": "-", "load": ":"}


def plot_curves(jobs: list[dict], path: Path, note: str) -> bool:
    """One panel per environment (CartPole, then the MuJoCo envs): each contestant's checkpoint
    evaluations against seconds since launch; solid idle, dotted under load. False: nothing to plot."""
    runs = [j for j in jobs if j["group"] in ("cartpole", "mujoco") and j["record"].get("eval_curve")]
    envs = list(dict.fromkeys(j["item"] for j in runs))
    if not envs or not runs:
        return False
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        labels = list(dict.fromkeys(j["label"] for j in runs if j["item"] == env))
        for k, label in enumerate(labels):
            seen = set()
            for j in (j for j in runs if j["item"] == env and j["label"] == label):
                curve = j["record"]["eval_curve"]
                name = f"{label} ({j['load']})"
                ax.plot(
                    [c[0] for c in curve],
                    [c[1] for c in curve],
                    STYLE.get(j["load"], "-"),
                    marker="o",
                    ms=2.5,
                    color=f"C{k}",
                    alpha=0.8,
                    label=None if name in seen else name,
                )
                seen.add(name)
        if env in TARGETS:
            ax.axhline(TARGETS[env], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="wall-clock seconds since launch", ylabel="evaluation return (deterministic)")
        ax.set_title(env + note, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_cnn_growth(jobs: list[dict], path: Path, note: str) -> bool:
    """Steps/s against num_envs and against the CNN width (log-log), per library and load."""
    groups = [g for g in ("cnn-envs", "cnn-width") if any(j["group"] == g for j in jobs)]
    if not groups:
        return False
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = [j for j in jobs if j["group"] == group]
        if group == "cnn-width":
            rows += [
                {**j, "x": 512}
                for j in jobs
                if j["group"] == "cnn-envs" and j["x"] == 8 and j["label"] != "ppokit bf16"
            ]
        for k, lib in enumerate(("ppokit", "SB3 CnnPolicy", "ppokit bf16")):  # the contestants' labels
            for load in ("idle", "load"):
                pts = sorted(
                    (j["x"], j["record"]["fps"])
                    for j in rows
                    if j["label"] == lib and j["load"] == load and j["record"].get("fps")
                )
                if pts:
                    ax.plot(*zip(*pts), STYLE[load], marker="o", color=f"C{k}", label=f"{lib} ({load})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="num_envs" if group == "cnn-envs" else "CNN feature width", ylabel="training steps/s")
        ax.set_title(("Pong, width 512" if group == "cnn-envs" else "Pong, 8 envs") + note, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
