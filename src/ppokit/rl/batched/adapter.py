"""One internal interface, ``BatchedEnv``, for the two kinds of device-resident batched envs PPO takes:

- a Gymnasium ``VectorEnv`` whose ``reset``/``step`` return torch tensors (announced by
  ``metadata["torch_tensors"] = True``, as ppokit's torch envs do, or passed to ``PPO`` as an
  instance), with SAME_STEP autoreset and the true final observation in ``info["final_obs"]``;
- rsl_rl's VecEnv interface (Isaac Lab's ``RslRlVecEnvWrapper`` and the like): ``num_envs``,
  ``num_actions``, ``get_observations()``, ``step(actions) -> (obs, rewards [N], dones [N], extras)``
  with ``extras["time_outs"]``; observations a tensor or groups (a dict / TensorDict with "policy"
  and optionally "critic": privileged observations for an asymmetric critic). rsl_rl's envs never
  get ``reset()`` called and drop the true final observation of a same-step reset; an
  ``extras["final_obs"]`` (groups) is used when the env gives one.

The adapter returns one flat observation ``[N, actor_dim (+ critic_dim)]``: with a "critic" group
the critic's features follow the actor's (the built-in asymmetric policy, ``policy.py``, splits them),
so storage, minibatching and the loss stay those of any other run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from ppokit.errors import ConfigError, EnvConfigError


def is_rsl_rl_env(env: Any) -> bool:
    """rsl_rl's VecEnv interface (duck-typed: rsl_rl need not be installed)."""
    return all(hasattr(env, a) for a in ("num_envs", "num_actions", "get_observations", "step"))


def is_tensor_vector_env(env: Any) -> bool:
    """A Gymnasium VectorEnv announcing torch tensors (``metadata["torch_tensors"]``)."""
    return isinstance(env, gym.vector.VectorEnv) and bool(getattr(env, "metadata", {}).get("torch_tensors"))


def is_batched_instance(env: Any) -> bool:
    """An env instance ``PPO(env)`` takes as a batched env (module docstring)."""
    return is_rsl_rl_env(env) or isinstance(env, gym.vector.VectorEnv)


def _groups(obs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(actor obs [N, a], critic obs [N, c] or None)`` of a tensor or of observation groups."""
    if isinstance(obs, torch.Tensor):
        return obs, None
    if isinstance(obs, Mapping) or hasattr(obs, "keys"):
        if "policy" not in obs.keys():
            raise EnvConfigError(
                f"the env's observation groups {sorted(obs.keys())} have no 'policy' group; ppokit reads "
                "'policy' (actor) and 'critic' (privileged critic, optional)"
            )
        return obs["policy"], obs["critic"] if "critic" in obs.keys() else None
    raise EnvConfigError(
        f"the batched env returned observations of type {type(obs).__name__}; give torch tensors or "
        "groups {'policy': tensor, 'critic': tensor}"
    )


class BatchedEnv:
    """The internal interface: ``reset(seed) -> obs``; ``step(actions) -> (obs, reward, terminated,
    truncated, final_obs or None)``, all ``[N, ...]`` tensors on ``device``. ``final_obs`` rows are
    meaningful where the step ended an episode."""

    def __init__(self, env: Any, device: torch.device):
        self.env, self.device = env, torch.device(device)
        self.rsl = is_rsl_rl_env(env) and not isinstance(env, gym.vector.VectorEnv)
        self.num_envs = int(env.num_envs)
        self.name = type(env).__name__
        if self.rsl:
            self.single_action_space = _rsl_action_space(env)
            got = env.get_observations()
            if isinstance(got, tuple):  # rsl_rl < 2.3: (obs, extras["observations"] groups)
                got = {"policy": got[0], **got[1].get("observations", {})}
            actor, critic = _groups(got)
        else:
            if env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.SAME_STEP:
                raise EnvConfigError(
                    f"{self.name}: a batched Gymnasium VectorEnv must use SAME_STEP autoreset "
                    "(metadata['autoreset_mode']), so the true final observation comes in info['final_obs']"
                )
            self.single_action_space = env.single_action_space
            actor, critic = _groups(env.reset()[0])
        self.actor_dim = int(np.prod(actor.shape[1:]))
        self.critic_dim = None if critic is None else int(np.prod(critic.shape[1:]))
        width = self.actor_dim + (self.critic_dim or 0)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)
        self._check_tensor(actor, "observation")
        self._current = self._flat(actor, critic)
        self.gives_final_obs = not self.rsl  # rsl_rl envs: only when extras carry "final_obs"

    def _check_tensor(self, x: Any, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise EnvConfigError(
                f"{self.name} returned a {type(x).__name__} {what}; a batched env returns torch tensors"
            )
        if x.device != self.device:
            raise ConfigError(
                f"device={str(self.device)!r} is not allowed with {self.name}: its tensors are on "
                f"{x.device}; set device={str(x.device)!r} or make the env on {self.device} "
                "(env_kwargs device=...)"
            )

    def _flat(self, actor: torch.Tensor, critic: torch.Tensor | None) -> torch.Tensor:
        actor = actor.reshape(self.num_envs, -1).float()
        if self.critic_dim is None:
            return actor
        return torch.cat((actor, critic.reshape(self.num_envs, -1).float()), dim=-1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """The current observation (a Gymnasium env is reset with ``seed``; rsl_rl envs are never
        reset by their trainers, so their current observation is used)."""
        if not self.rsl:
            self._current = self._flat(*_groups(self.env.reset(seed=seed)[0]))
        return self._current

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step of every instance (see the class docstring)."""
        if self.rsl:
            obs, reward, dones, extras = self.env.step(actions)
            truncated = extras.get("time_outs")
            truncated = torch.zeros_like(dones, dtype=torch.bool) if truncated is None else truncated.bool()
            dones = dones.bool()
            terminated = dones & ~truncated
            final = extras.get("final_obs")
            final = None if final is None else self._flat(*_groups(final))
        else:
            obs, reward, terminated, truncated, info = self.env.step(actions)
            final = info.get("final_obs")
            if final is not None:
                final = self._flat(final, info.get("final_critic_obs"))
        self._current = self._flat(*_groups(obs))
        return (
            self._current,
            reward.reshape(-1).float(),
            terminated.reshape(-1).bool(),
            truncated.reshape(-1).bool(),
            final,
        )

    def randomize_episode_lengths(self, generator: torch.Generator | None = None) -> None:
        """Set every instance's step count to a random step of its time limit (rsl_rl's
        ``init_at_random_ep_len``), or raise ConfigError naming what the env lacks."""
        inner = self.env
        buf = getattr(inner, "episode_length_buf", None)
        limit = getattr(inner, "max_episode_length", None) or getattr(inner, "max_episode_steps", None)
        if not isinstance(buf, torch.Tensor) or not limit:
            raise ConfigError(
                f"init_at_random_ep_len=True is not allowed with {self.name}: it needs a writable "
                "episode_length_buf tensor and max_episode_length (or max_episode_steps); use false"
            )
        inner.episode_length_buf = torch.randint(
            0, int(limit), buf.shape, generator=generator, device=buf.device, dtype=buf.dtype
        )

    def state_dict(self) -> tuple[dict | None, str | None]:
        """``(env state, None)`` when the env can save its exact state (``state_dict()``), else
        ``(None, why not)``."""
        inner = getattr(self.env, "env", self.env) if self.rsl else self.env
        if not hasattr(inner, "state_dict"):
            return None, f"{self.name} has no state_dict(); it is reset on resume"
        return {k: v.cpu() for k, v in inner.state_dict().items()}, None

    def load_state_dict(self, state: dict, current: torch.Tensor) -> None:
        """Restore ``state_dict``'s env state and the current (raw, flat) observation."""
        inner = getattr(self.env, "env", self.env) if self.rsl else self.env
        inner.load_state_dict(state)
        self._current = current.to(self.device)

    def close(self) -> None:
        """Close the env."""
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


def _rsl_action_space(env: Any) -> gym.Space:
    """The env's ``single_action_space`` when it has one, else an unbounded Box of ``num_actions``
    (rsl_rl's envs take raw actions and clip inside)."""
    space = getattr(env, "single_action_space", None)
    if isinstance(space, gym.Space):
        return space
    return gym.spaces.Box(-np.inf, np.inf, (int(env.num_actions),), np.float32)
