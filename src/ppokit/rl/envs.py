"""Making vectorized Gymnasium environments and checking that ppokit supports their spaces.

Finding the id (``module:Id``, ``gym_packages``, third-party namespaces) is ``envfind.py``; wrappers
from the config, ``wrappers.py``; how each observation space is stored, ``spaces.py``."""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from ppokit.errors import ConfigError, EnvConfigError, EnvError, EnvStepError, MissingDependencyError
from ppokit.rl.envfind import find_spec, import_packages, load_entry_point, one_line
from ppokit.rl.envpool_backend import make_envpool_vec
from ppokit.rl.masking import strip_mask_key
from ppokit.rl.spaces import ObsLayout
from ppokit.rl.wrappers import apply_wrappers, check_wrappers

EnvSpec = str | Callable[[], gym.Env]


def check_env_id(env_id: str, packages: list[str] | tuple = ()) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` (``Id`` or ``module:Id``, after importing ``packages`` and
    the id's known provider); an unknown id raises EnvConfigError with the closest names, a missing
    optional dependency MissingDependencyError with the install command (envfind.py)."""
    spec = find_spec(env_id, packages)
    load_entry_point(spec, env_id)
    return spec


def check_spaces(observation_space: gym.Space, action_space: gym.Space, env: str = "env") -> None:
    """Raise EnvConfigError naming the space unless ppokit supports both (spaces.py, distributions.py)."""
    from ppokit.rl.distributions import action_kind
    from ppokit.rl.spaces import ObsLayout

    try:
        ObsLayout(observation_space)
        action_kind(action_space)
    except EnvConfigError as e:
        raise EnvConfigError(f"{env}: {e}") from None


def _worker_env(factory: Callable[[], gym.Env], main_pid: int) -> gym.Env:
    """Build a sub-environment; inside an async worker process, leave Ctrl-C to the main process.

    A terminal's Ctrl-C reaches every process of the group: a worker that died of it would make the
    main process's clean stop (checkpoint, then exit) fail. SIGTERM keeps its default so that
    ``close(terminate=True)`` still ends the worker.
    """
    if os.getpid() != main_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return factory()


def _make_registered(
    env_id: str, env_kwargs: dict[str, Any], packages: tuple = (), wrappers: tuple = ()
) -> gym.Env:
    import_packages(packages)  # again: a spawned worker process has not imported them
    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise MissingDependencyError(f"env_id={env_id!r}: {one_line(e)}") from None
    return apply_wrappers(env, list(wrappers))


def _make_custom(factory: Callable[[], gym.Env], wrappers: tuple) -> gym.Env:
    return apply_wrappers(factory(), list(wrappers))


def make_vec_env(
    env: EnvSpec,
    num_envs: int,
    vectorization: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    packages: list[str] | tuple = (),
    wrappers: list | tuple = (),
) -> gym.vector.VectorEnv:
    """A vector env of ``num_envs`` copies of ``env`` (an id or a factory returning a ``gym.Env``).

    ``auto`` uses the environment's numpy-vectorised entry point when it registers one (CartPole:
    one numpy call steps all copies) and ``sync`` otherwise. ``sync``/``async`` use SAME_STEP
    autoreset (the final observation comes in ``info["final_obs"]``); vector entry points keep their
    own mode, which the rollout reads from ``metadata["autoreset_mode"]``. ``async`` gives a
    ``CheckedAsyncVectorEnv`` (worker errors name the env index and carry the worker's traceback).
    ``packages`` are imported before the id is looked up; ``wrappers`` (``env_wrappers`` entries)
    wrap every sub-environment, so ``auto`` then chooses ``sync`` (a vector entry point has none).
    """
    env_kwargs = dict(env_kwargs or {})
    packages, wrappers = tuple(packages), tuple(wrappers)
    label = f"env_id={env!r}" if isinstance(env, str) else env_name(env)
    check_wrappers(list(wrappers))
    if isinstance(env, str):
        spec = check_env_id(env, packages)
        if vectorization == "auto":
            vectorization = "vector_entry_point" if spec.vector_entry_point and not wrappers else "sync"
        if vectorization == "vector_entry_point" and wrappers:
            raise EnvConfigError(
                f"vectorization='vector_entry_point' is not allowed with env_wrappers for env_id={env!r}: "
                "the wrappers wrap single environments; use auto, sync or async"
            )
        if vectorization == "vector_entry_point" and not spec.vector_entry_point:
            raise EnvConfigError(
                f"vectorization='vector_entry_point' is not allowed for env_id={env!r}: it has no "
                "vector entry point; use auto, sync or async"
            )
        factory: Callable[[], gym.Env] = functools.partial(
            _make_registered, env, env_kwargs, packages, wrappers
        )
    else:
        factory = functools.partial(_make_custom, env, wrappers) if wrappers else env
    try:
        venv = _build(env, factory, num_envs, vectorization, env_kwargs)
    except TypeError as e:
        if not env_kwargs:
            raise
        raise EnvConfigError(f"env_kwargs={env_kwargs!r} is not allowed for {label}: {e}") from None
    venv = strip_mask_key(venv)  # a Dict observation's action_mask goes to info (rl/masking.py)
    try:
        check_spaces(venv.single_observation_space, venv.single_action_space, label)
    except EnvConfigError:
        venv.close()
        raise
    return venv


ALE_VECTOR_ENTRY = "ale_py.vector_env:AtariVectorEnv"
RAW_SCORE = "full game: all lives, unclipped rewards (as SB3's Monitor and CleanRL report Atari scores)"


def honest_eval_kwargs(
    env: EnvSpec,
    env_kwargs: dict[str, Any],
    vectorization: str = "auto",
    packages: list[str] | tuple = (),
    wrappers: list | tuple = (),
) -> tuple[dict[str, Any], str | None]:
    """``(env_kwargs for evaluation, how the score is counted)``: for an Atari id on ALE's vector env
    (the presets' ``configs/ALE``), the same preprocessing without ``episodic_life`` and without
    ``reward_clipping``, so an episode is the whole game and its return the game's raw score
    (``RAW_SCORE``; evaluation.py); other envs keep their kwargs and None."""
    # wrappers or ``sync`` mean single gym.make'd envs: ALE's AtariEnv, which neither ends episodes
    # on a lost life nor clips rewards (unless a wrapper does, which ppokit cannot undo)
    if not isinstance(env, str) or wrappers or vectorization == "sync":
        return dict(env_kwargs), None
    if check_env_id(env, packages).vector_entry_point != ALE_VECTOR_ENTRY:
        return dict(env_kwargs), None
    return {**env_kwargs, "episodic_life": False, "reward_clipping": False}, RAW_SCORE


def make_training_envs(env: EnvSpec, cfg: Any) -> tuple[gym.vector.VectorEnv, ObsLayout]:
    """The vector env a ``PPOConfig`` describes, with its autoreset mode checked, and how its
    observations are stored and fed to the policy (rl/spaces.py: uint8 images, packed Dicts).
    ``env_backend: envpool`` makes EnvPool's C++ pool instead (rl/envpool_backend.py, issue 33)."""
    if cfg.env_backend == "envpool":
        venv = make_envpool_vec(env, cfg)
        check_spaces(venv.single_observation_space, venv.single_action_space, f"env_id={env!r}")
    else:
        venv = make_vec_env(
            env, cfg.num_envs, cfg.vectorization, cfg.env_kwargs, cfg.gym_packages, cfg.env_wrappers
        )
    autoreset_mode(venv)
    layout = ObsLayout(venv.single_observation_space)
    if cfg.normalize_obs and layout.kind != "box":
        venv.close()
        raise ConfigError(
            f"normalize_obs=True is not allowed for {layout.kind} observations "
            f"({venv.single_observation_space}); it applies to Box observations (images are scaled by 1/255)"
        )
    return venv, layout


def _build(
    env: EnvSpec, factory: Callable[[], gym.Env], num_envs: int, vectorization: str, kwargs: dict
) -> gym.vector.VectorEnv:
    if vectorization == "vector_entry_point":
        return gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    from ppokit.rl.checked_env import checked_factories  # faults named with the env index and step

    # Async workers run the same checks in their process (an array reward, `terminated="no"` or
    # sys.exit() in an async env ended in a traceback or a dead worker: issue 34).
    fns = [functools.partial(_worker_env, factory, os.getpid())] * num_envs
    if vectorization == "async":
        return CheckedAsyncVectorEnv(
            checked_factories(fns, in_worker=True), autoreset_mode=AutoresetMode.SAME_STEP
        )
    return gym.vector.SyncVectorEnv(checked_factories(fns), autoreset_mode=AutoresetMode.SAME_STEP)


class CheckedAsyncVectorEnv(gym.vector.AsyncVectorEnv):
    """Gymnasium's AsyncVectorEnv with worker failures that say which environment failed and why.

    Gymnasium 1.4 re-raises a worker's exception as ``type(value)`` with the traceback only logged,
    and a worker that died outright (``os._exit``, a signal, a segfault) shows as a bare
    ``EOFError`` from its pipe. Here both become ``EnvStepError`` naming the env index, with the
    worker's traceback (or exit code) in ``details``; every worker is terminated first, so no child
    process outlives the error.
    """

    def step_wait(self, timeout: float | None = None):  # noqa: D102 (gymnasium's docstring applies)
        try:
            return super().step_wait(timeout)
        except (EOFError, ConnectionError, BrokenPipeError):
            raise self._dead_worker_error() from None

    def reset_wait(self, timeout: float | None = None):  # noqa: D102
        try:
            return super().reset_wait(timeout)
        except (EOFError, ConnectionError, BrokenPipeError):
            raise self._dead_worker_error() from None

    def _dead_worker_error(self) -> EnvStepError:
        # The pipe closes a moment before the dying process can be reaped: wait (briefly) for it.
        deadline = time.monotonic() + 5.0
        while all(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        dead = [(i, p.exitcode) for i, p in enumerate(self.processes) if not p.is_alive()]
        self._terminate()
        where = ", ".join(f"environment {i} (exit code {code})" for i, code in dead) or "a worker"
        return EnvStepError(f"{where} died in its worker process without reporting an error")

    def _terminate(self) -> None:
        # A failed call leaves unread replies in the other pipes: nothing to wait for, end them all.
        self._state = AsyncState.DEFAULT
        self.close(terminate=True)

    def _raise_if_errors(self, successes) -> None:
        if all(successes):
            return
        errors = [self.error_queue.get() for _ in range(self.num_envs - sum(successes))]
        self._terminate()
        index, exctype, value, trace = errors[0]
        others = f" (and {len(errors) - 1} more environments)" if len(errors) > 1 else ""
        # CheckedEnv's own error already names the environment, its step and what was wrong
        what = (
            f"{value}"
            if exctype is EnvStepError
            else f"environment {index} raised {exctype.__name__}: {value}"
        )
        raise EnvStepError(
            f"{what} in its worker process{others}",
            details="".join(f"worker traceback of environment {i}:\n{t}" for i, _, _, t in errors),
        )


def autoreset_mode(venv: gym.vector.VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (Gymnasium 1.x defaults to NEXT_STEP when unspecified)."""
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode == AutoresetMode.DISABLED:
        raise EnvError("vector envs with autoreset disabled are not supported")
    return mode


def env_name(env: EnvSpec) -> str:
    """A short name for run directories and logs."""
    return env if isinstance(env, str) else getattr(env, "__name__", "custom-env")


def space_signature(observation_space: gym.Space, action_space: gym.Space) -> dict[str, Any]:
    """JSON description of the spaces, saved with a model and checked when it is loaded."""
    from ppokit.rl.spaces import ObsLayout

    sig: dict[str, Any] = {
        **ObsLayout(observation_space).signature(),
        "action_type": type(action_space).__name__,
    }
    if isinstance(action_space, gym.spaces.Discrete):
        sig["action_n"] = int(action_space.n)
    elif isinstance(action_space, gym.spaces.MultiDiscrete):
        sig["action_nvec"] = [int(n) for n in np.asarray(action_space.nvec).ravel()]
    elif isinstance(action_space, gym.spaces.MultiBinary):
        sig["action_shape"] = list(action_space.shape)
    else:
        sig["action_shape"] = list(action_space.shape)
        sig["action_low"] = np.asarray(action_space.low, dtype=float).tolist()
        sig["action_high"] = np.asarray(action_space.high, dtype=float).tolist()
    return sig
