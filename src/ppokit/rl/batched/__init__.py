"""Device-resident batched envs (issue 32): N environments stepped at once, observations, rewards and
dones as torch tensors on the policy's device (Isaac Lab, ManiSkill3, Genesis, ppokit's torch envs).

``PPO`` takes such an env as an instance (``PPO(env)``), as a registered id whose vector entry point
announces tensors (``ppokit/CartPoleTorch-v0``), or from the CLI as ``module:factory`` (a callable
``factory(num_envs=, device=, **env_kwargs)``). ``adapter.py`` brings Gymnasium VectorEnvs and
rsl_rl's VecEnv interface to one internal interface; ``collector.py`` keeps the rollout, GAE's
inputs, normalisation and episode statistics on the device; ``policy.py`` is the asymmetric
actor-critic for a "critic" observation group. docs/batched-envs.md shows how to plug envs in.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from ppokit import distributed
from ppokit.errors import ConfigError, EnvConfigError
from ppokit.rl import envfind, envs
from ppokit.rl.batched.adapter import BatchedEnv, is_batched_instance, is_rsl_rl_env, is_tensor_vector_env
from ppokit.rl.batched.collector import (
    BatchedCollector,
    DeviceObsNormalizer,
    DeviceRewardScaler,
    to_env_actions,
)
from ppokit.rl.batched.policy import AsymmetricActorCritic
from ppokit.rl.rollout import RolloutBuffer
from ppokit.rl.spaces import ObsLayout
from ppokit.rl.torch_envs import ENV_IDS

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

__all__ = [
    "AsymmetricActorCritic",
    "BatchedCollector",
    "BatchedEnv",
    "check_numpy_path",
    "default_num_envs",
    "default_policy",
    "evaluate",
    "is_batched_instance",
    "is_rsl_rl_env",
    "is_tensor_vector_env",
    "make_batched",
    "make_rollout_parts",
    "make_training_envs",
    "to_env_actions",
]


def _factory(env_id: str) -> Any:
    """The callable a ``module:factory`` id names, or None when it names a registered env id."""
    module, _, name = env_id.rpartition(":")
    if not module or not name.isidentifier() or name in gym.registry:
        return None
    envfind.cwd_on_path()  # a factory in ./my_envs.py, as for module:Id (the console script lacks cwd)
    try:
        obj = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return obj if callable(obj) and not isinstance(obj, type) or _is_env_class(obj) else None


def _is_env_class(obj: Any) -> bool:
    """A batched env class (``module:MyVecEnv``): a Gymnasium VectorEnv or an rsl_rl-style env."""
    return isinstance(obj, type) and (
        issubclass(obj, gym.vector.VectorEnv) or hasattr(obj, "get_observations")
    )


def _call_factory(factory: Any, cfg: Any) -> Any:
    """``factory(num_envs=, device=, **env_kwargs)``, passing only the keywords it takes."""
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in (("num_envs", cfg.num_envs), ("device", cfg.device)) if takes_all or k in params}
    return factory(**kw, **cfg.env_kwargs)


def make_batched(env: Any, cfg: Any) -> BatchedEnv | None:
    """The ``BatchedEnv`` for ``env`` (an instance, or a ``module:factory`` id whose product is
    batched), or None when ``env`` is not a batched env (the Gymnasium numpy path takes it)."""
    if isinstance(env, str):
        factory = _factory(env)
        if factory is None:
            return None
        env = _call_factory(factory, cfg)
        if not is_batched_instance(env):
            raise EnvConfigError(
                f"env_id={cfg.env_id!r} names a callable that returned a {type(env).__name__}; a "
                "module:factory env must return a batched env (a Gymnasium VectorEnv of tensors or an "
                "rsl_rl VecEnv)"
            )
    elif not is_batched_instance(env):
        return None
    return adapt(env, cfg)


def adapt(env: Any, cfg: Any) -> BatchedEnv:
    """``env`` behind the internal interface, checked against the config."""
    if int(env.num_envs) != cfg.num_envs:
        raise ConfigError(
            f"num_envs={cfg.num_envs} is not allowed with this batched env: it steps {env.num_envs} "
            f"instances; set num_envs={env.num_envs}"
        )
    if cfg.network.recurrent != "none":
        raise ConfigError(
            f"network.recurrent={cfg.network.recurrent!r} is not supported with batched envs; use none"
        )
    return BatchedEnv(env, torch.device(cfg.device))


def default_num_envs(env: Any, config: Any, overrides: dict[str, Any]) -> None:
    """``PPO(env_instance)``: take ``num_envs`` from a batched env instance unless the call gives it
    (a keyword, a config dict's key; a ``PPOConfig`` always has one and must match: ``adapt``)."""
    given = (
        "num_envs" in overrides or not isinstance(config, (dict, type(None))) or "num_envs" in (config or {})
    )
    if is_batched_instance(env) and not given:
        overrides["num_envs"] = int(env.num_envs)


def make_training_envs(env: Any, cfg: Any) -> tuple[Any, ObsLayout]:
    """``envs.make_training_envs``, or a ``BatchedEnv`` for a batched instance, a ``module:factory``
    id or a registered id whose vector env returns tensors (ppokit's torch envs are made on
    ``cfg.device`` unless ``env_kwargs`` names one)."""
    batched = make_batched(env, cfg)
    if batched is None:
        if isinstance(env, str) and env in ENV_IDS and "device" not in cfg.env_kwargs:
            cfg = cfg.replace(env_kwargs={**cfg.env_kwargs, "device": _env_device(cfg)})
        venv, layout = envs.make_training_envs(env, cfg)
        if not is_tensor_vector_env(venv):
            return venv, layout
        batched = adapt(venv, cfg)
    return batched, ObsLayout(batched.single_observation_space)


def default_policy(venv: Any, cfg: Any) -> Any:
    """The built-in policy factory for ``venv``: the asymmetric actor-critic when the env has a
    "critic" group, else None (the usual built-in policy)."""
    if not isinstance(venv, BatchedEnv) or venv.critic_dim is None:
        return None
    return lambda obs_space, act_space: AsymmetricActorCritic(
        obs_space, act_space, cfg.network, venv.actor_dim
    )


def check_numpy_path(cfg: Any) -> None:
    """Refuse settings only the batched path implements (fail closed)."""
    if cfg.timeout_bootstrap == "value_of_obs":
        raise ConfigError(
            "timeout_bootstrap='value_of_obs' is not allowed for Gymnasium numpy envs (they always give the "
            "true final observation); it applies to batched envs; use auto or final_obs"
        )


def make_rollout_parts(ppo: PPO, rank_seed: int) -> None:
    """``PPO._make_rollout_parts`` for a batched env: device normalisers, the batched collector and a
    rollout buffer allocated on the device. Under torchrun every rank steps its own ``num_envs``
    instances, reset with its own ``rank_seed``; ``ppo.py`` averages the gradients and syncs the
    normalisers' statistics as on the numpy path (``ppokit/distributed.py``)."""
    cfg, venv = ppo.config, ppo.venv
    width = (venv.single_observation_space.shape[0],)
    ppo.obs_norm = DeviceObsNormalizer(width, ppo.device, cfg.obs_clip) if cfg.normalize_obs else None
    ppo.reward_scaler = (
        DeviceRewardScaler(cfg.num_envs, cfg.gamma, ppo.device, cfg.reward_clip)
        if cfg.normalize_reward
        else None
    )
    ppo.collector = BatchedCollector(
        venv, ppo.policy, ppo.device, rank_seed, ppo.obs_norm, ppo.reward_scaler, cfg.gamma,
        cfg.timeout_bootstrap, cfg.nan_policy,
    )  # fmt: skip
    if cfg.init_at_random_ep_len:  # after the collector's reset (a fresh run; resume restores the envs)
        venv.randomize_episode_lengths(torch.Generator(venv.device).manual_seed(rank_seed))
    ppo.masked, ppo.recurrent = False, False
    dist = ppo.policy.dist
    ppo.buffer = RolloutBuffer.allocate(
        cfg.n_steps, cfg.num_envs, width, dist.action_shape, dist.action_dtype
    ).to(ppo.device)
    if ppo.buffer.obs.device != ppo.device:  # RolloutBuffer.to keeps CPU buffers as they are
        raise AssertionError("the batched rollout buffer must live on the policy's device")


@torch.no_grad()
def evaluate(ppo: PPO, episodes: int, deterministic: bool, seed: int) -> dict[str, Any]:
    """Mean return of the first episode of each of the first ``episodes`` instances of a fresh copy of
    the training env when one can be made (a registered id or ``module:factory``), else of the
    training env itself (reset where it can be: rsl_rl envs are not; the rollout then continues from
    its new observation)."""
    cfg, venv = ppo.config, ppo.venv
    fresh = make_batched(cfg.env_id, cfg) if isinstance(ppo.env_spec, str) else None
    if fresh is None and isinstance(ppo.env_spec, str):  # a registered id of a torch vector env
        fresh = _registered(cfg)
    env = fresh or venv
    obs = env.reset(seed=seed)
    n = env.num_envs
    ret = torch.zeros(n, dtype=torch.float64, device=ppo.device)
    length = torch.zeros(n, dtype=torch.long, device=ppo.device)
    finished = torch.zeros(n, dtype=torch.bool, device=ppo.device)
    while not bool(finished[: min(n, episodes)].all()):
        x = ppo.obs_norm(obs, update=False) if ppo.obs_norm is not None else obs
        action, _, _ = ppo.policy.act(x, deterministic=deterministic)
        obs, reward, terminated, truncated, _ = env.step(to_env_actions(ppo.policy.dist, action))
        ret += torch.where(finished, 0.0, reward.double())
        length += (~finished).long()
        finished |= terminated | truncated
    if fresh is not None:
        fresh.close()
    else:  # the training env moved on: the rollout continues from where evaluation left it
        ppo.collector.resync()
    k = min(n, episodes)
    returns = ret[:k].cpu().numpy()
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "min_return": float(np.min(returns)),
        "max_return": float(np.max(returns)),
        "mean_length": float(length[:k].double().mean()),
        "episodes": k,
        "deterministic": deterministic,
        "env_id": cfg.env_id if isinstance(ppo.env_spec, str) else venv.name,
        "seed": seed,
        "returns": [round(float(r), 4) for r in returns],
    }


def _env_device(cfg: Any) -> str:
    """The device ppokit's torch envs are made on: the policy's (issue 31: under torchrun ``cuda`` is
    each rank's own GPU, cuda:LOCAL_RANK, as ``PPO.device`` is; ``distributed.resolve_device``)."""
    return str(distributed.resolve_device(cfg.device))


def _registered(cfg: Any) -> BatchedEnv | None:
    """A fresh torch vector env of a registered id (None: the id is no such env)."""
    kwargs = cfg.env_kwargs
    if cfg.env_id in ENV_IDS and "device" not in kwargs:
        kwargs = {**kwargs, "device": _env_device(cfg)}
    try:
        env = envs.make_vec_env(cfg.env_id, cfg.num_envs, cfg.vectorization, kwargs, cfg.gym_packages)
    except gym.error.Error:
        return None
    return adapt(env, cfg) if is_tensor_vector_env(env) else None
