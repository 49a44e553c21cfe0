"""Plots of a PPO-for-RLHF run, drawn from its ``metrics.csv`` (TRL's PPO metric names)."""

from __future__ import annotations

from pathlib import Path

from ppokit.llm.reporting import plot_figures

FIGURES = {
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
        ("fraction of tokens clipped", ["policy/clipfrac_avg"]),
        ("policy entropy per token", ["policy/entropy_avg"]),
    ],
    "value.png": [
        ("value loss (token mean)", ["loss/value_avg"]),
        ("fraction of tokens whose value was clipped", ["val/clipfrac_avg"]),
        ("explained variance of the returns", ["val/explained_variance"]),
    ],
    "completion_length.png": [
        ("completion length (tokens, incl. EOS)", ["completions/mean_length"]),
        ("fraction truncated (no EOS)", ["completions/clipped_ratio"]),
    ],
}


def plot_rlhf_run(run_dir: str | Path) -> list[Path]:
    """Draw the figures above (against PPO steps) into ``run_dir/plots``; returns the files written."""
    return plot_figures(run_dir, FIGURES, x_label="PPO step")
