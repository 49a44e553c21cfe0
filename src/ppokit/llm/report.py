"""What a language-model run leaves behind besides metrics: a samples table and the plots (GRPO's
figures from TRL's GRPO metric names, PPO-for-RLHF's from TRL's PPO names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ppokit.plotting import plot_panels, read_csv
from ppokit.train.files import atomic_write, refuse_link


def _cell(value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", "\\n")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub markdown table of dict rows (columns from the first row)."""
    if not rows:
        return "(no rows)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_samples(
    path: str | Path, sections: list[tuple[str, list[dict[str, Any]]]], title: str = "Samples"
) -> Path:
    """Write ``samples.md``: one markdown table per ``(heading, rows)`` section."""
    path = Path(path)
    parts = [f"# {title}\n"]
    for heading, rows in sections:
        parts.append(f"\n## {heading}\n\n{markdown_table(rows)}")
    atomic_write(path, "".join(parts))  # atomic, never through a link (issue 34)
    return path


def plot_llm_run(run_dir: str | Path) -> list[Path]:
    """Draw reward, accuracy, KL and completion-length plots (against steps) from ``metrics.csv``."""
    run_dir = Path(run_dir)
    refuse_link(run_dir / "plots")  # a planted link would put the plots outside the run (issue 34)
    cols = read_csv(run_dir / "metrics.csv")
    fn_means = sorted(k for k in cols if k.startswith("rewards/") and k.endswith("/mean"))
    figures = {
        "reward.png": [
            ("mean reward of the sampled completions", ["reward", *fn_means]),
            ("mean within-group reward std", ["reward_std"]),
            ("fraction of completions in groups of equal rewards", ["frac_reward_zero_std"]),
        ],
        "accuracy.png": [
            ("held-out exact-match accuracy (greedy)", ["eval/accuracy"]),
            ("held-out mean reward (greedy)", ["eval/reward"]),
        ],
        "kl.png": [
            ("KL(policy || reference), k3 estimate per token", ["kl"]),
            ("policy entropy per token", ["entropy"]),
        ],
        "completion_length.png": [
            ("completion length (tokens, incl. EOS)", ["completions/mean_length"]),
            ("fraction truncated (no EOS)", ["completions/clipped_ratio"]),
        ],
    }
    return plot_figures(run_dir, figures, x_label="GRPO step")


def plot_figures(
    run_dir: str | Path, figures: dict[str, list[tuple[str, list[str]]]], x_label: str
) -> list[Path]:
    """Draw ``{file name: [(panel title, metric columns), ...]}`` from ``run_dir/metrics.csv`` into
    ``run_dir/plots`` (against steps); returns the files written (a figure with no data is skipped)."""
    run_dir = Path(run_dir)
    cols = read_csv(run_dir / "metrics.csv")
    written = []
    for name, panels in figures.items():
        out = plot_panels(
            cols,
            "step",
            panels,
            run_dir / "plots" / name,
            title=f"{name[:-4]} - {run_dir.name}",
            x_label=x_label,
        )
        if out is not None:
            written.append(out)
    return written


# PPO for RLHF's figures (TRL's PPO metric names, and ppokit's clip fractions)
RLHF_PPO_FIGURES = {
    "accuracy.png": [
        ("held-out exact-match accuracy (greedy)", ["eval/accuracy"]),
        ("held-out mean reward (greedy)", ["eval/reward"]),
    ],
    "objective.png": [
        (
            "score of the sampled completions, and score - kl_coef * KL",
            ["objective/scores", "objective/rlhf_reward"],
        ),
        ("KL(policy || reference) per completion (sum over tokens)", ["objective/kl"]),
        ("KL coefficient", ["objective/kl_coef"]),
    ],
    "policy.png": [
        ("policy loss (clipped surrogate, token mean)", ["loss/policy_avg"]),
        ("approx KL(pi_old || pi) per token", ["policy/approxkl_avg"]),
        (
            "fraction of tokens outside the clip range, and with the clip active (gradient zero)",
            ["train/clip_fraction", "train/clipped_fraction"],
        ),
        ("policy entropy per token", ["policy/entropy_avg"]),
    ],
    "value.png": [
        ("value loss (token mean)", ["loss/value_avg"]),
        ("fraction of tokens whose value clip was active", ["train/value_clipped_fraction"]),
        ("explained variance of the returns", ["val/explained_variance"]),
    ],
    "completion_length.png": [
        ("completion length (tokens, incl. EOS)", ["completions/mean_length"]),
        ("fraction truncated (no EOS)", ["completions/clipped_ratio"]),
    ],
}


def plot_rlhf_run(run_dir: str | Path) -> list[Path]:
    """Draw ``RLHF_PPO_FIGURES`` (against PPO steps) into ``run_dir/plots``; returns the files written."""
    return plot_figures(run_dir, RLHF_PPO_FIGURES, x_label="PPO step")
