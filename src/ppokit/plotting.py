"""Plots drawn from a run's CSV files with matplotlib (Agg backend: no display needed)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ppokit.train.files import atomic_file, refuse_link  # noqa: E402


def read_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of a CSV as float lists (blank or unparsable cells become NaN)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {k: [] for k in (rows[0].keys() if rows else [])}
    for row in rows:
        for k in cols:
            try:
                cols[k].append(float(row.get(k) or "nan"))
            except ValueError:
                cols[k].append(math.nan)
    return cols


def plot_panels(
    cols: dict[str, list[float]],
    x_key: str,
    panels: list[tuple[str, list[str]]],
    out: str | Path,
    title: str = "",
    x_label: str | None = None,
) -> Path | None:
    """One subplot per ``(title, [column, ...])`` against ``x_key``; columns absent are skipped."""
    panels = [
        (t, [k for k in keys if k in cols and any(math.isfinite(v) for v in cols[k])]) for t, keys in panels
    ]
    panels = [(t, keys) for t, keys in panels if keys]
    if x_key not in cols or not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (ptitle, keys) in zip(axes[:, 0], panels):
        for k in keys:
            pts = [(x, y) for x, y in zip(cols[x_key], cols[k]) if math.isfinite(x) and math.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts), label=k, linewidth=1.4)
        ax.set_title(ptitle, fontsize=10)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(x_label or x_key)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    _save(fig, out)
    return out


def _save(fig: Any, out: Path) -> None:
    """``fig`` as the PNG ``out``, atomically: a planted ``out`` link is replaced, not written through
    (issue 34; a run's ``plots/`` as a link is refused by ``plot_rl_run``/``plot_llm_run``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(out, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)


def plot_rl_run(run_dir: str | Path) -> list[Path]:
    """Draw ``plots/returns.png`` and ``plots/losses.png`` of a Gymnasium PPO run."""
    run_dir = Path(run_dir)
    refuse_link(run_dir / "plots")  # a planted link would put the plots outside the run (issue 34)
    metrics = read_csv(run_dir / "metrics.csv")
    episodes = read_csv(run_dir / "episodes.csv")
    written = []
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if episodes.get("step"):
        ax.scatter(
            episodes["step"],
            episodes["return"],
            s=4,
            alpha=0.25,
            color="tab:gray",
            label="one training episode",
        )
    if metrics.get("time/total_timesteps"):
        ax.plot(
            metrics["time/total_timesteps"],
            metrics.get("rollout/ep_rew_mean", []),
            color="tab:blue",
            linewidth=2,
            label="mean of the last 100 training episodes",
        )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"Episode return during training - {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, run_dir / "plots" / "returns.png")
    written.append(run_dir / "plots" / "returns.png")
    losses = plot_panels(
        metrics,
        "time/total_timesteps",
        [
            ("actor (policy) loss, mean per update", ["train/policy_loss"]),
            ("critic (value) loss, mean per update", ["train/value_loss"]),
            ("policy entropy, mean per update", ["train/entropy"]),
        ],
        run_dir / "plots" / "losses.png",
        title=f"Losses - {run_dir.name}",
        x_label="environment steps",
    )
    if losses:
        written.append(losses)
    return written
