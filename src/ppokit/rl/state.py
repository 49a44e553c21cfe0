"""Saving, loading and checkpointing a PPO run: ``PPO.state_dict()``, the composition of the parts'
states (``parts_state``), written by the one checkpoint writer (train/checkpoint.py): tensors to
safetensors, the rest to JSON, nothing pickled.

A *model* (``PPO.save``) holds ``state_dict(training=False)``: the policy, normalisation statistics,
counters and KL coefficient, with the config and the spaces. A *training checkpoint* holds the full
``state_dict()``: also optimizer states, the step guard's counters, RNG states, the collector (episode
statistics and, when ``envstate.capture`` can save them, the environments' exact state with the
rollout's current observation). Resumed at an update boundary on CPU, such a run ends with
bit-identical parameters to an uninterrupted one. Environments that cannot be saved (MuJoCo, async
workers, custom envs holding other objects) are reset with a seed derived from the run seed and the
step count; ``resume_info`` says which happened.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.errors import CheckpointError, NonFiniteError
from ppokit.rl.config import PPOConfig
from ppokit.rl.envs import env_name, space_signature
from ppokit.tracking import trim_csv
from ppokit.train.checkpoint import (
    flatten_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_step_checkpoint,
    unflatten_state,
)
from ppokit.train.rng import capture_rng, restore_rng

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

MODEL_KIND = "ppokit.rl.PPO"
STATE_FORMAT = 2  # 1: wave-1 checkpoints (attribute by attribute), no longer read


def env_label(ppo: PPO) -> str:
    return env_name(ppo.env_spec)


def _policy_name(ppo: PPO) -> str:
    cls = type(ppo.policy)
    return f"{cls.__module__}.{cls.__qualname__}"


# -- PPO.state_dict / load_state_dict: the composition of the parts' states -----------------------
def parts_state(ppo: PPO, training: bool = True) -> dict[str, Any]:
    """``PPO.state_dict``: each part's own ``state_dict`` under its name, the counters and, with
    ``training``, what only a resumed run needs (optimizers, step guard, collector, RNGs)."""
    out: dict[str, Any] = {
        "policy": ppo.policy.state_dict(),
        "counters": {"num_timesteps": ppo.num_timesteps, "num_updates": ppo.num_updates},
        "kl": ppo.kl.state_dict(),
    }
    if ppo.obs_norm is not None:
        out["obs_norm"] = ppo.obs_norm.state_dict()
    if ppo.reward_scaler is not None:
        out["reward_scaler"] = ppo.reward_scaler.state_dict()
    if training:
        rng_tensors, rng_tree = capture_rng(numpy_generators={"ppo": ppo.np_rng})
        out["counters"]["target_timesteps"] = ppo.target_timesteps
        out.update(
            optimizers=[opt.state_dict() for opt in ppo.optimizers],
            guard=ppo.guard.state_dict(),
            collector=ppo.collector.state_dict(),
            rng={"tensors": rng_tensors, "tree": rng_tree},
        )
    return out


def load_parts_state(ppo: PPO, sd: dict[str, Any]) -> dict[str, Any]:
    """``PPO.load_state_dict``: each part restores its own state; returns what was restored."""
    ppo.policy.load_state_dict(sd["policy"])
    for part, key in ((ppo.obs_norm, "obs_norm"), (ppo.reward_scaler, "reward_scaler")):
        if part is not None:
            part.load_state_dict(sd[key])
    ppo.num_timesteps = int(sd["counters"]["num_timesteps"])
    ppo.num_updates = int(sd["counters"]["num_updates"])
    ppo.kl.load_state_dict(sd["kl"])
    info: dict[str, Any] = {"step": ppo.num_timesteps, "env_state_restored": False}
    if "optimizers" not in sd:
        return info
    for opt, opt_state in zip(ppo.optimizers, sd["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    ppo.guard.load_state_dict(sd["guard"])
    ppo.target_timesteps = sd["counters"]["target_timesteps"]
    restore_rng(sd["rng"]["tensors"], sd["rng"]["tree"], numpy_generators={"ppo": ppo.np_rng})
    missing = ppo.collector.load_state_dict(sd["collector"])
    if missing is not None and ppo.reward_scaler is not None:
        ppo.reward_scaler.returns[:] = 0.0  # fresh episodes: their discounted returns start at 0
    ppo.last_checkpoint_step = ppo.num_timesteps
    info.update(env_state_restored=missing is None, env_state_missing=missing)
    return info


def to_disk(ppo: PPO, training: bool) -> tuple[dict, dict[str, Any]]:
    """``(tensors, meta)`` of ``ppo.state_dict(training)`` with the config, spaces and policy class."""
    sd = ppo.state_dict(training=training)
    tensors, tree = flatten_state("", sd)
    meta = {
        "kind": MODEL_KIND,
        "format": STATE_FORMAT,
        "training": training,
        "config": ppo.config.to_dict(),
        "env": env_label(ppo),
        "spaces": space_signature(ppo.observation_space, ppo.action_space),
        "policy": _policy_name(ppo),
        "env_factory": ppo.env_fn is not None,
        "num_timesteps": ppo.num_timesteps,
        "state": tree,
    }
    if training:  # readable without decoding the state tree: why the envs would be reset on resume
        meta["env_state_missing"] = sd["collector"]["env"]["missing"]
    return tensors, meta


def check_compatible(ppo: PPO, meta: dict[str, Any], where: Path) -> None:
    """Refuse a model trained on other spaces or with another policy class (a clear error, not a
    shape crash)."""
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{str(where)!r} is not a ppokit PPO model (kind={meta.get('kind')!r})")
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{str(where)!r} was written by an older ppokit (format {meta.get('format', 1)}); "
            f"this version reads format {STATE_FORMAT}"
        )
    have = space_signature(ppo.observation_space, ppo.action_space)
    if meta.get("spaces") != have:
        raise CheckpointError(
            f"model {str(where)!r} was trained on spaces {meta.get('spaces')}, but the environment has {have}"
        )
    if meta.get("policy") != _policy_name(ppo):
        raise CheckpointError(
            f"model {str(where)!r} was trained with policy {meta.get('policy')}, not {_policy_name(ppo)}; "
            "pass the same policy (PPO.load(path, policy=...))"
        )


def restore(
    ppo: PPO, tensors: dict, meta: dict[str, Any], where: Path, training: bool = True
) -> dict[str, Any]:
    """Load a model's (or, with ``training``, a training checkpoint's) state into ``ppo``.

    Returns what was restored: ``{"checkpoint", "step", "env_state_restored", "env_state_missing"}``.
    A checkpoint whose contents do not fit the model raises CheckpointError, never a KeyError.
    """
    check_compatible(ppo, meta, where)
    try:
        sd = unflatten_state(meta["state"], tensors)
        if not training:
            sd = {
                k: v for k, v in sd.items() if k in ("policy", "obs_norm", "reward_scaler", "counters", "kl")
            }
        info = ppo.load_state_dict(sd)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {str(where)!r} does not fit this model ({type(e).__name__}: {e})"
        ) from None
    return {"checkpoint": str(where), **info}


def save_model(ppo: PPO, path: Path) -> Path:
    """Write the model directory atomically."""
    tensors, meta = to_disk(ppo, training=False)
    return save_checkpoint(path.parent, path.name, tensors, meta)


def save_training_checkpoint(ppo: PPO) -> Path | None:
    """A resumable checkpoint ``RUN_DIR/checkpoints/step_<N>``, keeping the newest K."""
    if ppo.run_dir is None:
        return None
    tensors, meta = to_disk(ppo, training=True)
    ppo.last_checkpoint_step, ppo.last_checkpoint_time = ppo.num_timesteps, time.time()
    ppo.last_checkpoint_path = save_step_checkpoint(
        ppo.run_dir / "checkpoints", ppo.num_timesteps, tensors, meta, keep=ppo.config.keep_checkpoints
    )
    return ppo.last_checkpoint_path


def checkpoint_now(ppo: PPO) -> Path | None:
    """A checkpoint of the current state: the last one if it is of this very step, else a new one."""
    last = ppo.last_checkpoint_path
    if last is not None and ppo.last_checkpoint_step == ppo.num_timesteps and last.exists():
        return last
    return save_training_checkpoint(ppo)


def maybe_checkpoint(ppo: PPO) -> None:
    """Checkpoint when the step count crossed a multiple of ``checkpoint_every``, or when
    ``checkpoint_every_seconds`` passed since the last checkpoint (the default, so that a killed run
    never loses more than a few minutes of work)."""
    cfg = ppo.config
    if ppo.run_dir is None:
        return
    every, seconds = cfg.checkpoint_every, cfg.checkpoint_every_seconds
    crossed = bool(every) and ppo.num_timesteps // every > ppo.last_checkpoint_step // every
    overdue = bool(seconds) and time.time() - ppo.last_checkpoint_time >= seconds
    if crossed or overdue:
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


def _read(path: Path, need_training: bool) -> tuple[dict, dict[str, Any]]:
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != MODEL_KIND or (need_training and not meta.get("training")):
        what = "PPO training checkpoint" if need_training else "PPO model"
        raise CheckpointError(f"{str(path)!r} is not a ppokit {what} (kind={meta.get('kind')!r})")
    return tensors, meta


def _require_env(meta: dict[str, Any], env: Any, where: Path, verb: str) -> None:
    """A model trained on an env factory cannot rebuild its env from the id in its config."""
    if env is None and meta.get("env_factory"):
        raise CheckpointError(
            f"model {str(where)!r} was trained on environments from a factory ({meta.get('env')}); "
            f"pass it again: PPO.{verb}(path, env=make_env)"
        )


def load_model(cls: type[PPO], path: Path, env: Any = None, policy: Any = None, **overrides: Any) -> PPO:
    """Rebuild a PPO from a saved model, run directory or checkpoint."""
    where = resolve_model_path(path)
    tensors, meta = _read(where, need_training=False)
    _require_env(meta, env, where, "load")
    config = PPOConfig.from_dict({**meta["config"], **overrides})
    ppo = cls(env if env is not None else config.env_id, config, policy=policy)
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


def resume(
    cls: type[PPO], path: Path, env: Any = None, run_dir: str | Path | None = None, policy: Any = None
) -> PPO:
    """Rebuild a PPO from a training checkpoint to continue learning (see ``PPO.resume``).

    Logs and checkpoints go on in ``run_dir``; by default, when ``path`` is a run directory, in that
    run (its rows after the checkpoint's step are dropped first: that work was lost).
    """
    where, own_run = find_training_checkpoint(path)
    tensors, meta = _read(where, need_training=True)
    _require_env(meta, env, where, "resume")
    config = PPOConfig.from_dict(meta["config"])
    # Environments that cannot be restored exactly start fresh episodes from a seed derived from the
    # run seed and the step count, so a resumed run does not replay the episodes it already saw.
    reseed = (config.seed + int(meta["num_timesteps"])) % 2**63
    ppo = cls(env if env is not None else config.env_id, config.replace(seed=reseed), policy=policy)
    ppo.config = config
    ppo.resume_info = restore(ppo, tensors, meta, where, training=True)
    run_dir = run_dir if run_dir is not None else own_run
    if run_dir is not None:
        from ppokit.train.rundir import RunDirLock

        # the lock first: two resumes of one run both trimmed its logs, then both appended (issue 16)
        try:
            lock = RunDirLock(run_dir)
        except BaseException:
            ppo.close()
            raise
        try:
            trim_logs(Path(run_dir), ppo.num_timesteps)
        except BaseException:
            lock.release()
            ppo.close()
            raise
        ppo.set_run_dir(run_dir, append=True, lock=lock)
    return ppo


def trim_logs(run_dir: Path, step: int) -> None:
    """Drop CSV rows logged after ``step`` (work lost with the process), so a resumed run's logs
    read as if it had never stopped."""
    trim_csv(run_dir / "metrics.csv", "time/total_timesteps", step)
    trim_csv(run_dir / "episodes.csv", "step", step)


def emergency_stop(ppo: PPO, error: NonFiniteError) -> NonFiniteError:
    """Checkpoint the last good state (skipped steps changed nothing) and name it in the error."""
    where = "no run directory, so no checkpoint was written"
    if ppo.run_dir is not None:
        where = f"emergency checkpoint of the last good state: {save_training_checkpoint(ppo)}"
    return NonFiniteError(f"{error}; {where}")
