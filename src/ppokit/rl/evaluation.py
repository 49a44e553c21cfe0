"""Evaluation: the mean return of fresh episodes, each environment counting only its first one
(counting episodes as they finish would over-represent short ones). A recurrent policy carries its
state through ``predict`` (reset at episode starts); a model trained with action masks gets the
evaluation envs' masks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ppokit.rl.envs import env_name, make_vec_env
from ppokit.rl.masking import MaskSource, mask_nvec

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO


def _mask_source(model: PPO, venv, info: dict) -> MaskSource | None:
    """The evaluation envs' masks when the model trained with masks (rl/masking.py)."""
    if not model.masked:
        return None
    nvec = mask_nvec(model.action_space)
    return MaskSource.detect(venv, info, nvec, "true", env_name(model.env_spec))


def evaluate_policy(
    model: PPO, episodes: int = 20, deterministic: bool = True, seed: int = 10_000, max_parallel: int = 32
) -> dict[str, Any]:
    """Run ``episodes`` episodes (up to ``max_parallel`` at once) and summarise their returns."""
    cfg = model.config
    returns: list[float] = []
    lengths: list[int] = []
    while len(returns) < episodes:
        k = min(max_parallel, episodes - len(returns))
        venv = make_vec_env(
            model.env_spec,
            k,
            "auto" if cfg.vectorization == "async" else cfg.vectorization,
            cfg.env_kwargs,
            cfg.gym_packages,
            cfg.env_wrappers,
        )
        try:
            obs, info = venv.reset(seed=seed + len(returns))
            masks = _mask_source(model, venv, info)
            mask = masks.read(info, 0) if masks is not None else None
            state, episode_start = None, np.ones(k, dtype=bool)  # a recurrent policy's memory
            ep_ret, ep_len = np.zeros(k), np.zeros(k, dtype=np.int64)
            finished = np.zeros(k, dtype=bool)
            while not finished.all():
                action, state = model.predict(
                    obs, state, episode_start, deterministic=deterministic, action_masks=mask
                )
                obs, reward, terminated, truncated, info = venv.step(action)
                episode_start = terminated | truncated
                ep_ret += np.where(finished, 0.0, reward)
                ep_len += ~finished
                finished |= episode_start
                if masks is not None and not finished.all():
                    mask = masks.read(info, int(ep_len.max()))
        finally:
            venv.close()
        returns += ep_ret.tolist()
        lengths += ep_len.tolist()
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "min_return": float(np.min(returns)),
        "max_return": float(np.max(returns)),
        "mean_length": float(np.mean(lengths)),
        "episodes": episodes,
        "deterministic": deterministic,
        "env_id": env_name(model.env_spec),
        "seed": seed,
        "returns": [round(r, 4) for r in returns],
    }
