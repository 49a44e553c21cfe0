"""Aggregate scores across tasks as rliable does (Agarwal et al. 2021), in numpy alone.

- normalise: (score - random) / (reference - random), so a random policy scores 0 and the reference
  (the best published PPO number listed in benchmarks/published.yaml) scores 1.
- iqm: the interquartile mean of all runs of all tasks pooled: drop the lowest and highest 25 % of the
  scores (floor(n/4) at each end, as scipy.stats.trim_mean(x, 0.25)) and average the rest.
- stratified_bootstrap_ci: resample the runs of each task with replacement, independently per task
  (the "stratified" bootstrap: every task keeps its number of runs), recompute the statistic, and take
  the 2.5 and 97.5 percentiles over the replicates (rliable's default percentile interval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def normalise(score: float | np.ndarray, random: float, reference: float) -> float | np.ndarray:
    """Shift and scale so that ``random`` maps to 0 and ``reference`` to 1."""
    if reference == random:
        raise ValueError(f"reference {reference} equals the random score; cannot normalise")
    return (np.asarray(score, dtype=float) - random) / (reference - random)


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half of the sorted scores (25 % trimmed each end)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    if x.size == 0:
        return float("nan")
    k = int(0.25 * x.size)  # floor, like scipy.stats.trim_mean(x, 0.25)
    return float(x[k : x.size - k].mean())


def stratified_bootstrap_ci(
    per_task: Sequence[Sequence[float]],
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high) of ``statistic`` over the pooled runs, with a 1 - alpha interval.

    ``per_task`` holds one sequence of run scores per task (tasks may have different run counts).
    Each replicate resamples every task's runs with replacement, pools them and applies ``statistic``.
    """
    tasks = [np.asarray(t, dtype=float) for t in per_task if len(t) > 0]
    if not tasks:
        return float("nan"), float("nan"), float("nan")
    point = statistic(np.concatenate(tasks))
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for i in range(reps):
        stats[i] = statistic(np.concatenate([t[rng.integers(0, t.size, t.size)] for t in tasks]))
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(low), float(high)
