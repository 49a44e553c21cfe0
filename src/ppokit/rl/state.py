"""Saving, loading and checkpointing a PPO run: safetensors for tensors, JSON for the rest.

A *model* (``PPO.save``) holds the networks, normalisation statistics, config and space signature.
A *checkpoint* adds what resuming needs: optimizer states, RNG states, counters, adaptive beta,
reward-scaler and episode-statistics state. Environment internals are not saved (Gymnasium envs
cannot be serialised in general): a resumed run resets its environments with a seed derived from
the run seed and the step count.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ppokit.checkpoint import (
    flatten_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)
from ppokit.errors import CheckpointError
from ppokit.rl.config import PPOConfig
from ppokit.rl.envs import env_name, space_signature

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

MODEL_KIND = "ppokit.rl.PPO"


def env_label(ppo: PPO) -> str:
    return env_name(ppo.env_spec)


def model_tensors(ppo: PPO) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Networks + normalisation statistics as tensors; config, spaces and counters as JSON."""
    tensors = {f"policy.{k}": v for k, v in ppo.policy.state_dict().items()}
    if ppo.obs_norm is not None:
        tensors.update(ppo.obs_norm.rms.state_tensors("obs_rms."))
    if ppo.reward_scaler is not None:
        tensors.update(ppo.reward_scaler.rms.state_tensors("ret_rms."))
    meta = {
        "kind": MODEL_KIND,
        "config": ppo.config.to_dict(),
        "env": env_label(ppo),
        "spaces": space_signature(ppo.observation_space, ppo.action_space),
        "num_timesteps": ppo.num_timesteps,
        "num_updates": ppo.num_updates,
        "kl_beta": ppo.kl_beta,
    }
    return tensors, meta


def training_tensors(ppo: PPO) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``model_tensors`` plus everything a resumed run needs."""
    tensors, meta = model_tensors(ppo)
    optim_trees = []
    for i, opt in enumerate(ppo.optimizers):
        t, tree = flatten_state(f"optim{i}", opt.state_dict())
        tensors.update(t)
        optim_trees.append(tree)
    tensors["rng.torch"] = torch.get_rng_state()
    ep = ppo.collector.episodes
    meta["training"] = {
        "optimizers": optim_trees,
        "numpy_rng": ppo.np_rng.bit_generator.state,
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "episodes_recent": list(ep.recent),
        "collector_steps": ppo.collector.steps,
        "nonfinite_skipped": ppo.nonfinite_skipped,
        "reward_returns": ppo.reward_scaler.returns.tolist() if ppo.reward_scaler is not None else None,
    }
    return tensors, meta


def check_compatible(ppo: PPO, meta: dict[str, Any], where: Path) -> None:
    """Refuse a model trained on other observation/action spaces (a clear error, not a shape crash)."""
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{str(where)!r} is not a ppokit PPO model (kind={meta.get('kind')!r})")
    have = space_signature(ppo.observation_space, ppo.action_space)
    if meta["spaces"] != have:
        raise CheckpointError(
            f"model {str(where)!r} was trained on spaces {meta['spaces']}, but the environment has {have}"
        )


def restore(ppo: PPO, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: Path) -> None:
    """Load networks, statistics and (when present) the training state into ``ppo``."""
    check_compatible(ppo, meta, where)
    policy_state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    ppo.policy.load_state_dict(policy_state)
    if ppo.obs_norm is not None:
        ppo.obs_norm.rms.load_tensors(tensors, "obs_rms.")
    if ppo.reward_scaler is not None:
        ppo.reward_scaler.rms.load_tensors(tensors, "ret_rms.")
    ppo.num_timesteps, ppo.num_updates, ppo.kl_beta = (
        meta["num_timesteps"],
        meta["num_updates"],
        meta["kl_beta"],
    )
    tr = meta.get("training")
    if tr is None:
        return
    for opt, tree in zip(ppo.optimizers, tr["optimizers"]):
        opt.load_state_dict(unflatten_state(tree, tensors))
    torch.set_rng_state(tensors["rng.torch"])
    ppo.np_rng.bit_generator.state = tr["numpy_rng"]
    v, st, g = tr["python_rng"]
    random.setstate((v, tuple(st), g))
    ppo.collector.episodes.recent.extend(tuple(x) for x in tr["episodes_recent"])
    ppo.collector.steps = tr["collector_steps"]
    ppo.nonfinite_skipped = tr["nonfinite_skipped"]
    if tr["reward_returns"] is not None and ppo.reward_scaler is not None:
        ppo.reward_scaler.returns = np.asarray(tr["reward_returns"], np.float64)


def save_model(ppo: PPO, path: Path) -> Path:
    """Write the model directory atomically (see ``ppokit.checkpoint``)."""
    tensors, meta = model_tensors(ppo)
    return save_checkpoint(path.parent, path.name, tensors, meta)


def save_training_checkpoint(ppo: PPO) -> Path | None:
    """A resumable checkpoint ``RUN_DIR/checkpoints/step_<N>``, keeping the newest K."""
    if ppo.run_dir is None:
        return None
    tensors, meta = training_tensors(ppo)
    ppo.last_checkpoint_step = ppo.num_timesteps
    return save_checkpoint(
        ppo.run_dir / "checkpoints",
        f"step_{ppo.num_timesteps:012d}",
        tensors,
        meta,
        keep=ppo.config.keep_checkpoints,
    )


def maybe_checkpoint(ppo: PPO) -> None:
    """Checkpoint when the step count crossed a multiple of ``checkpoint_every``."""
    every = ppo.config.checkpoint_every
    if every and ppo.run_dir is not None:
        last = getattr(ppo, "last_checkpoint_step", 0)
        if ppo.num_timesteps // every > last // every:
            save_training_checkpoint(ppo)


def resolve_model_path(path: Path) -> Path:
    """A model directory, or for a run directory its final model, else its newest checkpoint."""
    if not path.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    if (path / "manifest.json").exists() or (path / "tensors.safetensors").exists():
        return path
    if (path / "model" / "manifest.json").exists():
        return path / "model"
    newest = latest_checkpoint(path / "checkpoints")
    if newest is None:
        raise CheckpointError(f"{str(path)!r} holds no model and no complete checkpoint")
    return newest


def load_model(cls: type[PPO], path: Path, env: Any = None, **overrides: Any) -> PPO:
    """Rebuild a PPO from a saved model, run directory or checkpoint."""
    where = resolve_model_path(path)
    tensors, meta = load_checkpoint(where)
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{str(where)!r} is not a ppokit PPO model (kind={meta.get('kind')!r})")
    config = PPOConfig.from_dict({**meta["config"], **overrides})
    ppo = cls(env if env is not None else config.env_id, config)
    restore(ppo, tensors, meta, where)
    return ppo
