"""Saving, loading and checkpointing a PPO run: safetensors for tensors, JSON for the rest.

A *model* (``PPO.save``) holds the networks, normalisation statistics, config and space signature.
A *checkpoint* adds what resuming needs: optimizer states, torch/numpy/Python RNG states,
counters, the schedules' total, adaptive beta, reward-scaler returns, episode statistics and, when
``envstate.capture`` can save them (numpy-vectorised CartPole, classic control under sync
vectorization), the environments' exact state with the rollout's current observation. Resumed at
an update boundary on CPU, such a run ends with bit-identical parameters to an uninterrupted one.
Environments that cannot be saved (MuJoCo, async workers, custom envs holding other objects) are
reset with a seed derived from the run seed and the step count; ``resume_info`` says which happened.
"""

from __future__ import annotations

import csv
import os
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
from ppokit.errors import CheckpointError, NonFiniteError
from ppokit.rl import envstate
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
    """``model_tensors`` plus everything a resumed run needs (see the module docstring)."""
    tensors, meta = model_tensors(ppo)
    optim_trees = []
    for i, opt in enumerate(ppo.optimizers):
        t, tree = flatten_state(f"optim{i}", opt.state_dict())
        tensors.update(t)
        optim_trees.append(tree)
    tensors["rng.torch"] = torch.get_rng_state()
    if ppo.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(ppo.device)
    col = ppo.collector
    env_tensors, env_tree, env_missing = envstate.capture(ppo.venv)
    tensors.update(env_tensors)
    if env_tree is not None:  # the rollout's position within the current episodes
        tensors["collector.obs"] = col.obs
        tensors["collector.prev_done"] = torch.from_numpy(np.array(col.prev_done, dtype=bool))
        tensors["collector.ep_returns"] = torch.from_numpy(col.episodes.returns.copy())
        tensors["collector.ep_lengths"] = torch.from_numpy(col.episodes.lengths.copy())
    legacy = np.random.get_state()
    meta["training"] = {
        "optimizers": optim_trees,
        "numpy_rng": ppo.np_rng.bit_generator.state,
        "numpy_legacy_rng": [legacy[0], legacy[1].tolist(), *legacy[2:]],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "episodes_recent": list(col.episodes.recent),
        "collector_steps": col.steps,
        "collector_skipped_nonfinite": col.skipped_nonfinite,
        "nonfinite_skipped": ppo.nonfinite_skipped,
        "nonfinite_in_a_row": ppo.nonfinite_in_a_row,
        "target_timesteps": ppo.target_timesteps,
        "reward_returns": ppo.reward_scaler.returns.tolist() if ppo.reward_scaler is not None else None,
        "env_state": env_tree,
        "env_state_missing": env_missing,
    }
    return tensors, meta


def check_compatible(ppo: PPO, meta: dict[str, Any], where: Path) -> None:
    """Refuse a model trained on other observation/action spaces (a clear error, not a shape crash)."""
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{str(where)!r} is not a ppokit PPO model (kind={meta.get('kind')!r})")
    have = space_signature(ppo.observation_space, ppo.action_space)
    if meta.get("spaces") != have:
        raise CheckpointError(
            f"model {str(where)!r} was trained on spaces {meta.get('spaces')}, but the environment has {have}"
        )


def restore(
    ppo: PPO, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: Path, training: bool = True
) -> dict[str, Any]:
    """Load networks and statistics (and with ``training``, the training state) into ``ppo``.

    Returns what was restored: ``{"checkpoint", "step", "env_state_restored", "env_state_missing"}``.
    A checkpoint whose contents do not fit the model raises CheckpointError, never a KeyError.
    """
    check_compatible(ppo, meta, where)
    try:
        policy_state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
        ppo.policy.load_state_dict(policy_state)
        if ppo.obs_norm is not None:
            ppo.obs_norm.rms.load_tensors(tensors, "obs_rms.")
        if ppo.reward_scaler is not None:
            ppo.reward_scaler.rms.load_tensors(tensors, "ret_rms.")
        ppo.num_timesteps, ppo.num_updates = int(meta["num_timesteps"]), int(meta["num_updates"])
        ppo.kl_beta = float(meta["kl_beta"])
        info = {"checkpoint": str(where), "step": ppo.num_timesteps, "env_state_restored": False}
        if training and meta.get("training") is not None:
            info.update(_restore_training(ppo, tensors, meta["training"]))
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {str(where)!r} does not fit this model ({type(e).__name__}: {e})"
        ) from None
    return info


def _restore_training(ppo: PPO, tensors: dict[str, torch.Tensor], tr: dict[str, Any]) -> dict[str, Any]:
    for opt, tree in zip(ppo.optimizers, tr["optimizers"], strict=True):
        opt.load_state_dict(unflatten_state(tree, tensors))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and ppo.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], ppo.device)
    ppo.np_rng.bit_generator.state = tr["numpy_rng"]
    name, keys, *rest = tr["numpy_legacy_rng"]
    np.random.set_state((name, np.asarray(keys, np.uint32), *rest))
    v, st, g = tr["python_rng"]
    random.setstate((v, tuple(st), g))
    col = ppo.collector
    col.episodes.recent.clear()
    col.episodes.recent.extend(tuple(x) for x in tr["episodes_recent"])
    col.steps, col.skipped_nonfinite = tr["collector_steps"], tr["collector_skipped_nonfinite"]
    ppo.nonfinite_skipped, ppo.nonfinite_in_a_row = tr["nonfinite_skipped"], tr["nonfinite_in_a_row"]
    ppo.target_timesteps = tr["target_timesteps"]
    ppo.last_checkpoint_step = ppo.num_timesteps
    missing = tr["env_state_missing"]
    if missing is None:
        missing = envstate.restore(ppo.venv, tensors, tr["env_state"])
    if missing is None:
        col.obs = tensors["collector.obs"].to(ppo.device)
        col.prev_done = tensors["collector.prev_done"].numpy().copy()
        col.episodes.returns = tensors["collector.ep_returns"].numpy().copy()
        col.episodes.lengths = tensors["collector.ep_lengths"].numpy().copy()
        if ppo.reward_scaler is not None:
            ppo.reward_scaler.returns = np.asarray(tr["reward_returns"], np.float64)
    else:
        # The environments were reset (fresh episodes): re-normalise their first observation with
        # the restored statistics; the running returns of the reward scaler start again from zero.
        col.obs = col._normalize(col.raw_obs, update=False)
    return {"env_state_restored": missing is None, "env_state_missing": missing}


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
    ppo.last_checkpoint_path = save_checkpoint(
        ppo.run_dir / "checkpoints",
        f"step_{ppo.num_timesteps:012d}",
        tensors,
        meta,
        keep=ppo.config.keep_checkpoints,
    )
    return ppo.last_checkpoint_path


def checkpoint_now(ppo: PPO) -> Path | None:
    """A checkpoint of the current state: the last one if it is of this very step, else a new one."""
    last = ppo.last_checkpoint_path
    if last is not None and ppo.last_checkpoint_step == ppo.num_timesteps and last.exists():
        return last
    return save_training_checkpoint(ppo)


def maybe_checkpoint(ppo: PPO) -> None:
    """Checkpoint when the step count crossed a multiple of ``checkpoint_every``."""
    every = ppo.config.checkpoint_every
    if every and ppo.run_dir is not None:
        if ppo.num_timesteps // every > ppo.last_checkpoint_step // every:
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
    restore(ppo, tensors, meta, where, training=False)
    return ppo


def find_training_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """``(checkpoint, run_dir)`` for a run directory (its newest complete checkpoint, and itself) or
    a checkpoint directory (itself, and no run directory: logging is the caller's choice)."""
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} does not exist or is not a directory")
    if (path / "manifest.json").exists():
        return path, None
    newest = latest_checkpoint(path / "checkpoints")
    if newest is None:
        what = "run directory" if (path / "config.yaml").is_file() else "ppokit run directory or checkpoint"
        raise CheckpointError(f"{str(path)!r} is no {what} with a complete checkpoint to resume from")
    return newest, path


def resume(cls: type[PPO], path: Path, env: Any = None, run_dir: str | Path | None = None) -> PPO:
    """Rebuild a PPO from a training checkpoint to continue learning (see ``PPO.resume``).

    Logs and checkpoints go on in ``run_dir``; by default, when ``path`` is a run directory, in that
    run (its rows after the checkpoint's step are dropped first: that work was lost).
    """
    where, own_run = find_training_checkpoint(path)
    tensors, meta = load_checkpoint(where)
    if meta.get("kind") != MODEL_KIND or "training" not in meta:
        raise CheckpointError(f"{str(where)!r} is not a ppokit PPO training checkpoint")
    config = PPOConfig.from_dict(meta["config"])
    # Environments that cannot be restored exactly start fresh episodes from a seed derived from the
    # run seed and the step count, so a resumed run does not replay the episodes it already saw.
    reseed = (config.seed + int(meta["num_timesteps"])) % 2**63
    ppo = cls(env if env is not None else config.env_id, config.replace(seed=reseed))
    ppo.config = config
    ppo.resume_info = restore(ppo, tensors, meta, where, training=True)
    run_dir = run_dir if run_dir is not None else own_run
    if run_dir is not None:
        trim_logs(Path(run_dir), ppo.num_timesteps)
        ppo.set_run_dir(run_dir, append=True)
    return ppo


def trim_logs(run_dir: Path, step: int) -> None:
    """Drop CSV rows logged after ``step`` (work lost with the process), so a resumed run's logs
    read as if it had never stopped."""
    for name, column in (("metrics.csv", "time/total_timesteps"), ("episodes.csv", "step")):
        path = run_dir / name
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        keep = [r for r in rows if not r.get(column) or float(r[column]) <= step]
        if len(keep) == len(rows):
            continue
        tmp = path.with_name(f".{name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, path)


def emergency_stop(ppo: PPO, error: NonFiniteError) -> NonFiniteError:
    """Checkpoint the last good state (skipped steps changed nothing) and name it in the error."""
    where = "no run directory, so no checkpoint was written"
    if ppo.run_dir is not None:
        where = f"emergency checkpoint of the last good state: {save_training_checkpoint(ppo)}"
    return NonFiniteError(f"{error}; {where}")
