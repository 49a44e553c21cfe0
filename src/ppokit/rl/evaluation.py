"""Evaluation: the mean return of fresh episodes, each environment counting only its first one
(counting episodes as they finish would over-represent short ones). A recurrent policy carries its
state through ``predict`` (reset at episode starts); a model trained with action masks gets the
evaluation envs' masks.

**Honest scores.** Atari is trained on one life at a time with rewards clipped to their sign (the
presets' ``episodic_life`` and ``reward_clipping``), but the score people compare is the full game's
raw score: all lives, unclipped rewards, as SB3's ``Monitor`` (placed before the Atari wrappers) and
CleanRL's ``RecordEpisodeStatistics`` report it. Evaluation therefore plays the whole game
(``envs.honest_eval_kwargs``) and, as the training wrappers' FIRE-on-reset did after each lost life,
presses FIRE once after a life is lost (CleanRL and SB3 wrap ``FireResetEnv`` around
``EpisodicLifeEnv``, whose reset after a lost life is that FIRE). The result says so in ``score``.

**Deterministic vs stochastic.** A policy may need its sampling (in MiniGrid the argmax action can
walk into a wall forever); ``stochastic_hint`` compares a deterministic score with training's and,
when it is far below, a few sampled episodes, so ``ppokit eval`` can say so.

``video_dir`` records each episode with gymnasium's ``RecordVideo`` (``render_mode="rgb_array"``,
one environment at a time); ``render`` shows them (``render_mode="human"``, needs a display).
"""

from __future__ import annotations

import csv
import functools
import operator
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppokit.errors import ConfigError
from ppokit.rl.envs import RAW_SCORE, env_name, honest_eval_kwargs, make_vec_env
from ppokit.rl.masking import MaskSource, mask_nvec

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

__all__ = ["RAW_SCORE", "evaluate_policy", "last_training_return", "stochastic_hint"]


def _mask_source(model: PPO, venv, info: dict) -> MaskSource | None:
    """The evaluation envs' masks when the model trained with masks (rl/masking.py)."""
    if not model.masked:
        return None
    nvec = mask_nvec(model.action_space)
    return MaskSource.detect(venv, info, nvec, "true", env_name(model.env_spec))


def _viewing_kwargs(model: PPO, video_dir: str | Path | None, render: bool) -> dict[str, str]:
    """The ``render_mode`` that ``--video`` / ``--render`` need, or refuse them by name."""
    if video_dir is None and not render:
        return {}
    flag = "--render" if render else "--video"
    if not isinstance(model.env_spec, str):
        raise ConfigError(
            f"{flag} needs a registered env id (render_mode is a gym.make argument); this model's env is "
            f"the factory {env_name(model.env_spec)}: build it with render_mode and wrap RecordVideo yourself"
        )
    if model.config.env_id.startswith("ALE/") and "stack_num" in model.config.env_kwargs:
        raise ConfigError(
            f"{flag} is not supported for env_id={model.config.env_id!r} on ALE's vector env (it does not "
            "render); evaluate without it"
        )
    if render:
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        if sys.platform.startswith("linux") and not display:
            raise ConfigError(
                "--render needs a display (neither DISPLAY nor WAYLAND_DISPLAY is set); record the "
                "episodes with --video DIR instead"
            )
        return {"render_mode": "human"}
    return {"render_mode": "rgb_array"}


def _close(venv: Any) -> str | None:
    """Close the evaluation envs; an env whose ``close()`` raises (or calls ``sys.exit()``) is named, not
    a traceback that loses the finished evaluation (issue 34)."""
    try:
        venv.close()
    except (Exception, SystemExit) as e:
        return f"the environments raised {type(e).__name__}: {e} when closed"
    return None


def _video_wrapper(video_dir: str | Path, name: str) -> dict[str, dict[str, Any]]:
    """An ``env_wrappers`` entry recording the first episode of its environment to ``video_dir``
    (as ``<name>-episode-0.mp4``)."""
    return {
        "gymnasium.wrappers.RecordVideo": {
            "video_folder": str(video_dir),
            "name_prefix": name,
            # the env's first episode only: the autoreset after it starts one that is never finished
            "episode_trigger": functools.partial(operator.eq, 0),
            "disable_logger": True,
        }
    }


def _fire_action(venv) -> int | None:
    """The index of FIRE in an ALE vector env's action set (pressed after a lost life), else None."""
    ale = getattr(getattr(venv, "unwrapped", venv), "ale", None)
    if ale is None or not hasattr(ale, "get_action_set"):
        return None
    names = [getattr(a, "name", str(a)) for a in ale.get_action_set()]
    return names.index("FIRE") if "FIRE" in names else None


def evaluate_policy(
    model: PPO,
    episodes: int = 20,
    deterministic: bool = True,
    seed: int = 10_000,
    max_parallel: int = 32,
    video_dir: str | Path | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """Run ``episodes`` episodes (up to ``max_parallel`` at once) and summarise their returns; on
    Atari the full game's raw score (``score`` says how it was counted). ``video_dir``: record every
    episode there as an mp4 (gymnasium's RecordVideo); ``render``: show them in a window."""
    cfg = model.config
    vectorization = "auto" if cfg.vectorization == "async" else cfg.vectorization
    env_kwargs, score = honest_eval_kwargs(
        model.env_spec, cfg.env_kwargs, vectorization, cfg.gym_packages, cfg.env_wrappers
    )
    view_kwargs = _viewing_kwargs(model, video_dir, render)
    viewing = bool(view_kwargs)
    if viewing:  # one environment at a time, each a single gym.make'd env (RecordVideo wraps one)
        env_kwargs, max_parallel = {**env_kwargs, **view_kwargs}, 1
    vectorization = "sync" if viewing else vectorization
    returns: list[float] = []
    lengths: list[int] = []
    final_lives: list[int] = []
    close_error: str | None = None
    while len(returns) < episodes:
        k = min(max_parallel, episodes - len(returns))
        wrappers = list(cfg.env_wrappers)
        if video_dir is not None:  # named by the episode's seed, which replays it
            slug = env_name(model.env_spec).replace("/", "-").replace(":", "-")
            wrappers.append(_video_wrapper(video_dir, f"{slug}-seed{seed + len(returns)}"))
        with warnings.catch_warnings():  # RecordVideo warns that the folder (ours) already holds videos
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            venv = make_vec_env(model.env_spec, k, vectorization, env_kwargs, cfg.gym_packages, wrappers)
        try:
            ep_ret, ep_len, lives = _play(
                model, venv, k, seed + len(returns), deterministic, score is not None
            )
        finally:
            close_error = _close(venv) or close_error
        returns += ep_ret.tolist()
        lengths += ep_len.tolist()
        final_lives += lives
    if close_error is not None:  # the episodes are complete: the result stands, the fault is named
        warnings.warn(
            f"ppokit eval: {close_error}; the evaluation itself finished", UserWarning, stacklevel=2
        )
    result = {
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
    if score is not None:
        result.update(score=score, final_lives=final_lives)
    if video_dir is not None:
        result["video_dir"] = str(video_dir)
    return result


def _play(
    model: PPO, venv, k: int, seed: int, deterministic: bool, atari: bool
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The first episode of each of the ``k`` envs: ``(returns, lengths, lives left at its end)``."""
    obs, info = venv.reset(seed=seed)
    masks = _mask_source(model, venv, info)
    mask = masks.read(info, 0) if masks is not None else None
    lives = np.asarray(info["lives"]) if atari and "lives" in info else None
    use_fire = lives is not None and model.config.env_kwargs.get("use_fire_reset", True)
    fire = _fire_action(venv) if use_fire else None
    state, episode_start = None, np.ones(k, dtype=bool)  # a recurrent policy's memory
    ep_ret, ep_len = np.zeros(k), np.zeros(k, dtype=np.int64)
    finished = np.zeros(k, dtype=bool)
    end_lives = np.zeros(k, dtype=np.int64)
    lost = np.zeros(k, dtype=bool)
    while not finished.all():
        action, state = model.predict(
            obs, state, episode_start, deterministic=deterministic, action_masks=mask
        )
        if fire is not None and lost.any():  # FIRE after a lost life, as FireResetEnv would
            action = np.where(lost, fire, action)
        obs, reward, terminated, truncated, info = venv.step(action)
        episode_start = terminated | truncated
        ep_ret += np.where(finished, 0.0, reward)
        ep_len += ~finished
        if lives is not None:
            now = np.asarray(info["lives"])
            lost, lives = now < lives, now
            end_lives = np.where(finished, end_lives, now)
        finished |= episode_start
        if masks is not None and not finished.all():
            mask = masks.read(info, int(ep_len.max()))
    return ep_ret, ep_len, end_lives.tolist() if lives is not None else []


def last_training_return(run_dir: str | Path) -> float | None:
    """The last finite ``rollout/ep_rew_mean`` of ``run_dir/metrics.csv`` (None without one)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        values = [row.get("rollout/ep_rew_mean") or "" for row in csv.DictReader(f)]
    for value in reversed(values):
        try:
            x = float(value)
        except ValueError:
            continue
        if np.isfinite(x):
            return x
    return None


def stochastic_hint(
    model: PPO, result: dict[str, Any], train_mean: float | None, episodes: int = 10
) -> dict[str, Any] | None:
    """When a deterministic ``result`` scores below half of training's last mean return
    ``train_mean`` (positive), evaluate ``episodes`` sampled episodes too; return
    ``{"stochastic_mean": ..., "message": ...}`` when sampling scores higher, else None."""
    if not result["deterministic"] or train_mean is None or not train_mean > 0:
        return None
    if result["mean_return"] >= 0.5 * train_mean:
        return None
    sampled = evaluate_policy(model, episodes, deterministic=False, seed=result["seed"])
    if sampled["mean_return"] <= result["mean_return"]:
        return None
    message = (
        f"deterministic evaluation ({result['mean_return']:.2f}) scores far below the last training "
        f"return ({train_mean:.2f}); sampled actions score {sampled['mean_return']:.2f} over {episodes} "
        "episodes: this policy needs its randomness (the argmax action can loop), evaluate with --stochastic"
    )
    return {"stochastic_mean": sampled["mean_return"], "stochastic_episodes": episodes, "message": message}
