"""Running statistics for observation normalisation and reward scaling (saved with the model)."""

from __future__ import annotations

import numpy as np
import torch

from ppokit import distributed


def merge_moments(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean, var, count)`` of the union of disjoint samples given by their moments."""
    mean, var, count = parts[0]
    for m, v, c in parts[1:]:
        total = count + c
        if total == 0:
            continue
        delta = m - mean
        m2 = var * count + v * c + delta**2 * count * c / total
        mean, var, count = mean + delta * c / total, m2 / total, total
    return mean, var, count


def _clip_(x: np.ndarray, bound: float) -> np.ndarray:
    """``np.clip(x, -bound, bound)`` in place on a fresh array: the same values from two ufunc calls
    (``np.clip`` goes through a Python wrapper that cost ~10 us a call, issue 33's per-step study)."""
    x = np.asarray(x, dtype=np.float64)
    return np.minimum(np.maximum(x, -bound, out=x), bound, out=x)


class RunningMeanStd:
    """Mean and variance of a stream, merged batch by batch with Chan et al.'s parallel formula
    (https://en.wikipedia.org/wiki/Algorithms_for_calculating_variance#Parallel_algorithm).
    The same merge combines statistics gathered on different ranks."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon  # a tiny prior count keeps the first merge well defined, as in SB3
        # Moments of the data seen since the last cross-rank sync (only used with several ranks).
        self.fresh: tuple[np.ndarray, np.ndarray, float] | None = None
        self.synced: tuple[np.ndarray, np.ndarray, float] = (self.mean.copy(), self.var.copy(), self.count)

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch ``[B, *shape]`` into the statistics."""
        batch = np.asarray(batch, np.float64)
        several_ranks = distributed.info().enabled
        if batch.shape[0] == 1 and not several_ranks:  # one env in one process: the rollout's hot path
            self._add_one(batch[0])
            return
        if batch.shape[0] == 1:  # one env: np.mean + np.var cost ~25 us a step; the moments are exact
            moments = (batch[0].copy(), np.zeros(batch.shape[1:]), 1.0)
        else:
            moments = (batch.mean(axis=0), batch.var(axis=0), float(batch.shape[0]))
        self.merge(*moments)
        # the moments since the last sync are only needed by sync(), i.e. with several ranks
        if several_ranks:
            self.fresh = moments if self.fresh is None else merge_moments([self.fresh, moments])

    def _add_one(self, x: np.ndarray) -> None:
        """``merge(x, 0, 1)`` written out (issue 33): the same floating-point operations as
        ``merge_moments`` with a one-sample part (its ``v * c`` is 0 and ``c`` is 1, both exact), without
        the tuples and the list, and without the cross-rank bookkeeping a single process never syncs."""
        total = self.count + 1.0
        delta = x - self.mean
        self.var = (self.var * self.count + delta * delta * self.count / total) / total
        self.mean = self.mean + delta / total
        self.count = total

    def sync(self) -> None:
        """Merge all ranks' data since the last sync into the statistics every rank shared then;
        afterwards every rank holds the statistics of all ranks' data (torch.distributed)."""
        fresh = self.fresh or (np.zeros_like(self.mean), np.ones_like(self.var), 0.0)
        parts = distributed.all_gather_objects(fresh)
        self.mean, self.var, self.count = merge_moments([self.synced, *parts])
        self.synced = (self.mean.copy(), self.var.copy(), self.count)
        self.fresh = None

    def merge(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        """Fold in statistics ``(mean, var, count)`` of another sample."""
        self.mean, self.var, self.count = merge_moments(
            [(self.mean, self.var, self.count), (mean, var, count)]
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Mean, variance and count as float64 tensors."""
        return {
            "mean": torch.tensor(np.asarray(self.mean), dtype=torch.float64),
            "var": torch.tensor(np.asarray(self.var), dtype=torch.float64),
            "count": torch.tensor(float(self.count), dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned."""
        self.mean = state["mean"].numpy().astype(np.float64)
        self.var = state["var"].numpy().astype(np.float64)
        self.count = float(state["count"])
        self.synced = (self.mean.copy(), self.var.copy(), self.count)
        self.fresh = None


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(shape)
        self.clip, self.eps = clip, eps

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return _clip_(out, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The running statistics (saved with the model: predict normalises the same way)."""
        return self.rms.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned."""
        self.rms.load_state_dict(state)


class RewardScaler:
    """Divide rewards by the running std of the discounted return (SB3's VecNormalize; Engstrom et
    al. 2020, "Implementation Matters", call it reward scaling). The mean is not subtracted: shifting
    rewards would change which episodes are better to end early."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def __call__(self, rewards: np.ndarray, done: np.ndarray, update: bool = True) -> np.ndarray:
        if update:
            self.returns = self.returns * self.gamma + rewards
            self.rms.update(self.returns)
            self.returns[done] = 0.0
        return _clip_(rewards / np.sqrt(self.rms.var + self.eps), self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The return statistics and each env's running discounted return."""
        return {**self.rms.state_dict(), "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned (``returns`` is optional: a model file has none)."""
        self.rms.load_state_dict(state)
        if "returns" in state:
            self.returns = state["returns"].numpy().astype(np.float64).copy()


def sync_statistics(*parts: ObsNormalizer | RewardScaler | None) -> None:
    """With several ranks, merge every rank's new normalisation statistics (identical after)."""
    if distributed.info().enabled:
        for part in parts:
            if part is not None:
                part.rms.sync()
