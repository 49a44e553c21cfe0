"""The rollout: step the vector env ``n_steps`` times into preallocated storage.

Gymnasium 1.x vector envs reset finished sub-envs in one of two ways, and both are handled:

- SAME_STEP (sync/async envs made by ppokit): the step that ends an episode returns the *reset*
  observation and puts the real last observation in ``info["final_obs"]``. A truncated episode is
  bootstrapped with V(final_obs), computed here.
- NEXT_STEP (numpy vector entry points such as CartPole's): the ending step returns the real last
  observation, and the *next* step ignores the action and returns the reset observation with reward 0.
  That step is no transition of the agent: it is stored with ``valid = False`` and left out of the
  update. The bootstrap needs no extra work: the value computed at that step *is* V(final obs).

With action masks (rl/masking.py) each step's mask is passed to the policy and stored for the update.
A recurrent policy (rl/recurrent.py) gets its state and ``episode_start``: the first observation of an
episode is the reset observation returned by the ending step (SAME_STEP), or by the reset step after
it (NEXT_STEP; the reset step itself still continues the ended episode's state, so its value is the
recurrent V(final obs)). The state at the start of the rollout and every step's ``episode_start`` are
stored, so the update can re-run the sequences exactly.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from ppokit import distributed
from ppokit.errors import ConfigError, EnvStepError
from ppokit.rl import envstate
from ppokit.rl.fast import act as fast_act
from ppokit.rl.masking import MaskSource, mask_nvec
from ppokit.rl.normalization import ObsNormalizer, RewardScaler
from ppokit.rl.policy import Policy
from ppokit.rl.recurrent import RecurrentPolicy
from ppokit.rl.spaces import ObsLayout


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_fits_in_memory(nbytes: int, n_steps: int, num_envs: int) -> None:
    """Refuse a rollout buffer larger than the memory available: ``n_steps=1e9`` ended in a raw
    allocator error or an OOM kill (issue 34); the config is what the user has to change."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise ConfigError(
            f"n_steps * num_envs = {n_steps:,} * {num_envs:,} transitions need {nbytes / 2**30:,.1f} GiB "
            f"for the rollout buffer; this machine has {free / 2**30:,.1f} GiB available: lower n_steps "
            "or num_envs"
        )


@dataclass
class RolloutBuffer:
    """Storage ``[T, N, ...]``; ``next_values[t]`` is V of the observation that followed step t.

    Kept in host memory: the rollout writes each step through numpy views of these tensors (a numpy
    item write costs ~0.3 us against ~4 us for a torch one, and a step writes nine fields), and the
    update moves the whole rollout to the training device in one copy per field (``to``; nothing is
    copied on CPU)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    done: torch.Tensor
    valid: torch.Tensor
    masks: torch.Tensor | None = None  # [T, N, mask_dim] bool, with action masks (rl/masking.py)
    episode_start: torch.Tensor | None = None  # [T, N] bool, recurrent policies (rl/recurrent.py)
    initial_state: torch.Tensor | None = None  # [N, state_size], the state at the rollout's start

    @classmethod
    def allocate(
        cls,
        n_steps: int,
        num_envs: int,
        obs_shape: tuple,
        action_shape: tuple,
        action_dtype: torch.dtype,
        mask_dim: int | None = None,
        state_size: int | None = None,
        obs_dtype: torch.dtype = torch.float32,
    ) -> RolloutBuffer:
        """Zeroed storage; ``mask_dim`` adds ``masks``, ``state_size`` the recurrent fields, ``obs_dtype``
        is the observation layout's (uint8 for images, rl/spaces.py)."""
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype)
        T, N = n_steps, num_envs
        recurrent = state_size is not None
        per_step = (  # bytes of one transition over every field below
            int(np.prod(obs_shape)) * obs_dtype.itemsize
            + int(np.prod(action_shape)) * action_dtype.itemsize
            + 4 * 4  # logp, values, next_values, rewards (float32)
            + 3  # terminated, done, valid (bool)
            + (mask_dim or 0)
            + (1 if recurrent else 0)
        )
        _check_fits_in_memory(T * N * per_step, T, N)
        return cls(
            obs=z(T, N, *obs_shape, dtype=obs_dtype),
            actions=z(T, N, *action_shape, dtype=action_dtype),
            logp=z(T, N),
            values=z(T, N),
            next_values=z(T, N),
            rewards=z(T, N),
            terminated=z(T, N, dtype=torch.bool),
            done=z(T, N, dtype=torch.bool),
            valid=z(T, N, dtype=torch.bool),
            masks=z(T, N, mask_dim, dtype=torch.bool) if mask_dim is not None else None,
            episode_start=z(T, N, dtype=torch.bool) if recurrent else None,
            initial_state=z(N, state_size) if recurrent else None,
        )

    def numpy(self) -> dict[str, np.ndarray]:
        """Writable numpy views of every field (they share memory with the tensors)."""
        return {
            f.name: getattr(self, f.name).numpy() for f in fields(self) if getattr(self, f.name) is not None
        }

    def to(self, device: torch.device) -> RolloutBuffer:
        """The buffer on ``device`` (itself on CPU)."""
        if device.type == "cpu":
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return RolloutBuffer(**{k: v.to(device) if v is not None else None for k, v in moved.items()})


class EpisodeStats:
    """Returns and lengths of finished training episodes (raw env rewards), bounded memory."""

    def __init__(self, num_envs: int, window: int = 100):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.recent: collections.deque = collections.deque(maxlen=window)
        self.new: list[tuple[float, int, int, float]] = []  # (return, length, step, time) since last drain

    def add(self, rewards: np.ndarray, done: np.ndarray, valid: np.ndarray, step: int, t: float) -> None:
        self.returns += rewards * valid
        self.lengths += valid
        if not done.any():  # most steps (issue 33: the loop and the masked writes cost ~10 us a step)
            return
        for i in np.flatnonzero(done):
            self.recent.append((float(self.returns[i]), int(self.lengths[i])))
            self.new.append((float(self.returns[i]), int(self.lengths[i]), step, t))
        self.returns[done] = 0.0
        self.lengths[done] = 0

    def mean_return(self) -> float:
        return float(np.mean([r for r, _ in self.recent])) if self.recent else float("nan")

    def metrics(self) -> dict[str, float]:
        """Mean return and length of the recent episodes; with several ranks, of all ranks' recent ones."""
        recent = list(self.recent)
        if distributed.info().enabled:
            recent = [x for part in distributed.all_gather_objects(recent) for x in part]
        mean = lambda i: float(np.mean([x[i] for x in recent])) if recent else float("nan")  # noqa: E731
        return {"rollout/ep_rew_mean": mean(0), "rollout/ep_len_mean": mean(1)}

    def drain(self) -> list[tuple[float, int, int, float]]:
        new, self.new = self.new, []
        return new

    def state_dict(self) -> dict:
        """The recent episodes and each env's running return and length."""
        return {
            "recent": [list(x) for x in self.recent],
            "returns": torch.from_numpy(self.returns.copy()),
            "lengths": torch.from_numpy(self.lengths.copy()),
        }

    def load_state_dict(self, state: dict, running: bool = True) -> None:
        """Restore ``state_dict``; ``running=False`` keeps the current running sums (fresh episodes)."""
        self.recent.clear()
        self.recent.extend((float(r), int(n)) for r, n in state["recent"])
        if running:
            self.returns = state["returns"].numpy().copy()
            self.lengths = state["lengths"].numpy().copy()


_F32_MAX = float(np.finfo(np.float32).max)


def _finite_in_float32(x: np.ndarray) -> np.ndarray:
    """Element-wise: finite, and still finite once cast to float32 (the training dtype)."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        return np.ones(x.shape, dtype=bool)  # integers and booleans are always finite
    if x.dtype.itemsize <= 4:
        return np.isfinite(x)
    with np.errstate(invalid="ignore"):
        return np.abs(x) <= _F32_MAX  # False for NaN and +-Inf too


class Collector:
    """Holds the env's current observation between rollouts and fills a ``RolloutBuffer``, asking the
    policy for actions through the policy interface (``act`` and ``value``, rl/policy.py)."""

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        policy: Policy,
        device: torch.device,
        seed: int,
        obs_norm: ObsNormalizer | None,
        reward_scaler: RewardScaler | None,
        nan_policy: str = "raise",
        action_masking: bool | str = "auto",
        label: str = "env",
        layout: ObsLayout | None = None,
    ):
        self.venv, self.policy, self.device = venv, policy, device
        self.obs_norm, self.reward_scaler, self.nan_policy = obs_norm, reward_scaler, nan_policy
        self.same_step = (
            venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) == AutoresetMode.SAME_STEP
        )
        self.num_envs = venv.num_envs
        self.action_space = venv.single_action_space
        # observations are stored as the layout says (rl/spaces.py): Dict/Discrete packed, images uint8
        self.layout = layout if layout is not None else ObsLayout(venv.single_observation_space)
        self.episodes = EpisodeStats(self.num_envs)
        # EnvPool's Atari: returns of the whole game in raw rewards (rl/envpool_backend.py, issue 33)
        self.episode_view = getattr(venv, "episode_view", None)
        self.skipped_nonfinite = 0
        self.steps = 0  # env steps taken (all envs together)
        # issue 33: the built-in MLP's per-step act in numpy where it samples what policy.act samples
        # (rl/fast/act.py); False always calls policy.act (the reference the tests compare with)
        self.numpy_act = True
        venv.action_space.seed(seed)
        raw, info = venv.reset(seed=seed)
        raw = self.layout.encode(raw)
        self._check_finite(raw, "observation", 0)
        self.raw_obs = raw  # kept so that a resumed run can re-normalise it with restored statistics
        self.obs = self._normalize(raw, update=True)
        self.prev_done = np.zeros(self.num_envs, dtype=bool)
        mode = {True: "true", False: "false"}.get(action_masking, action_masking)
        nvec = mask_nvec(venv.single_action_space)
        self.mask_source = MaskSource.detect(venv, info, nvec, mode, label)
        self.mask = self._read_mask(info, 0)  # the current observation's mask (None: no masks)
        self.recurrent = isinstance(policy, RecurrentPolicy)
        if self.recurrent:  # the state before the current observation, and whether it starts an episode
            self.state = policy.initial_state(self.num_envs).to(device)
            self.episode_start = np.ones(self.num_envs, dtype=bool)

    def _read_mask(self, info: dict, step: int, done: np.ndarray | None = None) -> torch.Tensor | None:
        if self.mask_source is None:
            return None
        ignore = None if self.same_step else done  # NEXT_STEP: the env ignores the next action there
        return torch.as_tensor(self.mask_source.read(info, step, ignore), device=self.device)

    def _act(self, nb: dict[str, np.ndarray], t: int) -> tuple:
        """The policy's ``(action, logp, values)`` for the current observation, passing (and storing)
        the mask and, for a recurrent policy, its state."""
        kw = {} if self.mask is None else {"mask": self.mask}
        if self.mask is not None:
            nb["masks"][t] = self.mask.cpu().numpy()
        if not self.recurrent:
            return self.policy.act(self.obs, **kw)
        nb["episode_start"][t] = self.episode_start
        start = torch.as_tensor(self.episode_start, device=self.device)
        action, logp, values, self.state = self.policy.act(
            self.obs, state=self.state, episode_start=start, **kw
        )
        return action, logp, values

    def _value(self, obs: torch.Tensor, idx: np.ndarray | None = None) -> torch.Tensor:
        """V(obs) without gradient; a recurrent policy continues each env's episode (``idx``: which)."""
        if not self.recurrent:
            return self.policy.value(obs)
        if idx is not None:  # final observations of ending episodes: their state is not reset
            return self.policy.value(obs, state=self.state[torch.as_tensor(idx, device=self.device)])
        start = torch.as_tensor(self.episode_start, device=self.device)
        return self.policy.value(obs, state=self.state, episode_start=start)

    def _normalize(self, raw: np.ndarray, update: bool) -> torch.Tensor:
        """Encoded observations ``[B, *layout.shape]`` -> the policy's input on the device."""
        obs = self.obs_norm(raw, update=update) if self.obs_norm is not None else raw
        obs = np.asarray(obs, dtype=self.layout.np_dtype)
        if self.device.type == "cpu" and obs.flags.writeable:  # shares the array: ~1 us, not ~30 (issue 33)
            return torch.from_numpy(np.ascontiguousarray(obs))
        return torch.as_tensor(obs, device=self.device)

    def _check_finite(self, x: np.ndarray, field: str, step: int) -> np.ndarray:
        """Raise EnvStepError naming env index, step and field, or (nan_policy=skip) return a bad mask.

        Checked as training will see it, in float32: a finite float64 such as 1e300 overflows to inf
        in the cast, and without this the run stopped updates later blaming "the loss"."""
        # the common case, in a few numpy calls (integer data, e.g. uint8 images, cannot be non-finite);
        # one reduction for floats: max |x| is NaN (so the comparison fails) if any element is NaN
        if x.dtype.kind in "uib" or (x.dtype.kind == "f" and float(np.abs(x).max()) <= _F32_MAX):
            return np.zeros(self.num_envs, dtype=bool)
        if _finite_in_float32(x).all():
            return np.zeros(self.num_envs, dtype=bool)
        bad = ~_finite_in_float32(x).reshape(self.num_envs, -1).all(axis=1)
        if bad.any() and self.nan_policy == "raise":
            i = int(np.flatnonzero(bad)[0])
            raise EnvStepError(
                f"environment {i} returned a non-finite {field} at step {step} (NaN, Inf, or beyond "
                f"float32's range +-3.4e38; set nan_policy=skip to skip and count such transitions)"
            )
        return bad

    def _drop_nonfinite_final(
        self, final: np.ndarray, idx: np.ndarray, valid: np.ndarray, t: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check the final observations of truncated episodes (they feed the bootstrap value)."""
        bad = ~_finite_in_float32(final).reshape(len(idx), -1).all(axis=1)
        if not bad.any():
            return final, idx
        if self.nan_policy == "raise":
            raise EnvStepError(
                f"environment {int(idx[bad][0])} returned a non-finite final observation (info['final_obs']) "
                f"at step {self.steps} (set nan_policy=skip to skip and count such transitions)"
            )
        self.skipped_nonfinite += int(bad.sum())
        valid[t, idx[bad]] = False
        return final[~bad], idx[~bad]

    def _numpy_actor(self) -> fast_act.NumpyActor | None:
        """The numpy act for this rollout where it stands in exactly for ``policy.act``, else None."""
        if not self.numpy_act:
            return None
        bf16 = torch.is_autocast_enabled(self.device.type)  # run_step's autocast under bf16
        masked, recurrent = self.mask_source is not None, self.recurrent
        if fast_act.unsupported_reason(self.policy, self.device, bf16, masked, recurrent) is not None:
            return None
        return fast_act.NumpyActor(self.policy)

    @torch.inference_mode()
    def collect(self, buf: RolloutBuffer) -> None:
        """Fill ``buf`` with ``T`` steps of every env (the rollout)."""
        T = buf.obs.shape[0]
        nb = buf.numpy()
        host = lambda x: x.cpu().numpy()  # no copy on CPU
        final_values = np.zeros_like(nb["next_values"])  # V(final obs) of SAME_STEP truncations
        has_final = np.zeros_like(nb["done"])
        batched_values = False  # the policy left the values to one batched call after the rollout
        if self.recurrent:
            nb["initial_state"][:] = host(self.state)
        actor = self._numpy_actor()
        for t in range(T):
            if actor is not None:  # rl/fast/act.py: numpy arrays, values left to the batched pass
                action, logp = actor(host(self.obs))
                values = None
            else:
                action, logp, values = self._act(nb, t)
                action, logp = host(action), host(logp.float())
            nb["obs"][t] = host(self.obs)
            nb["actions"][t] = action
            nb["logp"][t] = logp
            if values is None:
                batched_values = True
            else:
                nb["values"][t] = host(values.float())  # float() under bf16 autocast
            # stored as sampled (its logp is exact); the env gets it clipped/squashed, in its shape
            raw, reward, terminated, truncated, info = self.venv.step(self.policy.dist.to_env(action))
            raw = self.layout.encode(raw)
            self.steps += self.num_envs
            valid = ~self.prev_done
            bad = self._check_finite(raw, "observation", self.steps) | self._check_finite(
                reward, "reward", self.steps
            )
            if bad.any():  # nan_policy == "skip": drop these transitions and count them
                self.skipped_nonfinite += int(bad.sum())
                valid &= ~bad
                raw = np.where(bad.reshape((-1,) + (1,) * (raw.ndim - 1)), 0.0, raw)
                reward = np.where(bad, 0.0, reward)
            done = terminated | truncated
            view = self.episode_view
            ep_reward, ep_done = (reward, done) if view is None else view(reward, terminated, truncated, info)
            self.episodes.add(np.asarray(ep_reward, np.float64), ep_done, valid, self.steps, time.time())
            nb["rewards"][t] = self.reward_scaler(reward, done) if self.reward_scaler is not None else reward
            nb["terminated"][t] = terminated
            nb["done"][t] = done
            nb["valid"][t] = valid
            self.raw_obs = raw
            self.obs = self._normalize(raw, update=True)
            self.mask = self._read_mask(info, self.steps, done)
            if self.same_step and truncated.any():
                idx = np.flatnonzero(truncated)
                final = np.stack([self.layout.encode_one(info["final_obs"][i]) for i in idx])
                final, idx = self._drop_nonfinite_final(final, idx, nb["valid"], t)
                final_values[t, idx] = host(self._value(self._normalize(final, update=False), idx).float())
                has_final[t, idx] = True
            if self.recurrent:  # does the new observation start an episode? (module docstring)
                self.episode_start = done.copy() if self.same_step else self.prev_done.copy()
            # NEXT_STEP: the step after an ending step is the env's reset step (see module docstring)
            self.prev_done = np.zeros_like(done) if self.same_step else done
        # By default step t bootstraps with V(obs t+1). A policy that returned no values gets V of every
        # stored observation and of the one after the last step in one batched pass (the parameters
        # do not change during the rollout).
        if batched_values:
            obs_shape = buf.obs.shape[2:]
            all_obs = torch.cat([buf.obs.reshape(T * self.num_envs, *obs_shape).to(self.device), self.obs])
            values = host(self.policy.value(all_obs).float()).reshape(T + 1, self.num_envs)
            nb["values"][:] = values[:T]
        else:
            values = np.concatenate([nb["values"], host(self._value(self.obs).float())[None]])
        nb["next_values"][:] = values[1:]
        nb["next_values"][has_final] = final_values[has_final]

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters, episode statistics and, where ``envstate.capture`` can save them, the
        environments' exact state with the rollout's current observation."""
        env_tensors, env_tree, missing = envstate.capture(self.venv)
        state = {
            "steps": self.steps,
            "skipped_nonfinite": self.skipped_nonfinite,
            "episodes": self.episodes.state_dict(),
            "env": {"tensors": env_tensors, "tree": env_tree, "missing": missing},
        }
        if missing is None:  # the rollout's position within the current episodes
            state["obs"] = self.obs.cpu()
            state["prev_done"] = torch.from_numpy(np.array(self.prev_done, dtype=bool))
            if self.mask is not None:
                state["mask"] = self.mask.cpu()
            if self.recurrent:
                state["recurrent_state"] = self.state.cpu()
                state["episode_start"] = torch.from_numpy(np.array(self.episode_start, dtype=bool))
        return state

    def load_state_dict(self, state: dict) -> str | None:
        """Restore ``state_dict``; returns None when the environments were restored exactly, else why
        not (they then keep the fresh episodes they were reset to, and the running episode sums
        start from zero). Restore the observation normaliser first: the fresh observation is
        re-normalised with its statistics."""
        self.steps, self.skipped_nonfinite = int(state["steps"]), int(state["skipped_nonfinite"])
        env = state["env"]
        missing = env["missing"]
        if missing is None:
            missing = envstate.restore(self.venv, env["tensors"], env["tree"])
        self.episodes.load_state_dict(state["episodes"], running=missing is None)
        if missing is None:
            self.obs = state["obs"].to(self.device)
            self.prev_done = state["prev_done"].numpy().copy()
            if self.mask is not None:
                self.mask = state["mask"].to(self.device)
            if self.recurrent:
                self.state = state["recurrent_state"].to(self.device)
                self.episode_start = state["episode_start"].numpy().copy()
        else:
            self.obs = self._normalize(self.raw_obs, update=False)
        return missing
