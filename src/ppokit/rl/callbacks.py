"""Callbacks as Stable-Baselines3 users know them, on ppokit's run loop.

The run loop's contract (``PPO.learn(callback=...)``): ``callback`` is None, a function
``f(model, metrics) -> bool | None``, an object with any of ``on_start(model)``,
``on_step(model, metrics) -> bool | None`` and ``on_end(model)``, or a list of those; ``on_step``
runs once per update, after it, and returning False stops training. ``loop_hooks`` turns any of
these into one object with the three hooks (and adds the ``verbose`` table of SB3's form).

``BaseCallback`` maps the three hooks onto SB3's (``_on_training_start``, ``_on_rollout_start``,
``_on_rollout_end``, ``_on_step``, ``_on_training_end``). One difference is deliberate and
documented (docs/migrating-from-sb3.md): SB3 calls ``_on_step`` after every vectorized env step,
ppokit once per update (``n_steps`` env steps per env, all environments together
``n_steps * num_envs``), so ``n_calls`` counts updates. Frequencies given in SB3's unit (calls, i.e.
vectorized steps: ``eval_freq``, ``save_freq``) are converted to env steps, ``freq * num_envs``, the
number of env steps SB3 would have taken between two events, and the event fires after the first
update that crosses a multiple of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppokit.errors import ConfigError
from ppokit.rl.sb3 import evaluate_policy

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO


class BaseCallback:
    """SB3's callback base class. Override ``_on_step`` (return False to stop) and any of
    ``_init_callback``, ``_on_training_start``, ``_on_rollout_start``, ``_on_rollout_end``,
    ``_on_training_end``. Attributes: ``model``, ``num_timesteps``, ``n_calls`` (updates seen),
    ``locals`` (``{"self": model, "metrics": this update's metrics}``), ``training_env``, ``parent``."""

    def __init__(self, verbose: int = 0):
        self.verbose = verbose
        self.model: PPO | None = None
        self.n_calls = 0
        self.num_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None

    @property
    def training_env(self) -> Any:
        """The model's running training env (``model.get_env()``)."""
        return None if self.model is None else self.model.get_env()

    def init_callback(self, model: PPO) -> None:
        """Attach to ``model`` (SB3 calls it when learn starts; so does ``on_start``)."""
        self.model = model
        self._init_callback()

    # -- ppokit's run loop calls these three ---------------------------------------------------------
    def on_start(self, model: PPO) -> None:
        """Run-loop hook: training starts."""
        if self.model is not model:
            self.init_callback(model)
        self.num_timesteps = model.num_timesteps
        self._on_training_start()
        self._on_rollout_start()

    def on_step(self, model: PPO | None = None, metrics: dict | None = None) -> bool:
        """Run-loop hook, after each update (``model`` and ``metrics`` given): the rollout ended,
        ``_on_step`` runs, the next rollout starts. Called with no arguments (a parent callback's
        event, as in SB3), it counts the call and runs ``_on_step`` with the parent's step count."""
        if model is None:
            self.n_calls += 1
            if self.parent is not None:
                self.num_timesteps = self.parent.num_timesteps
            return self._on_step() is not False
        self.num_timesteps = model.num_timesteps
        self.locals = {"self": model, "metrics": dict(metrics or {})}
        self.n_calls += 1
        self._on_rollout_end()
        go_on = self._on_step() is not False
        self._on_rollout_start()
        return go_on

    def on_end(self, model: PPO) -> None:
        """Run-loop hook: training ended (also when a callback stopped it)."""
        self._on_training_end()

    # -- SB3's hooks, to override --------------------------------------------------------------------
    def _init_callback(self) -> None:
        pass

    def _on_training_start(self) -> None:
        pass

    def _on_rollout_start(self) -> None:
        pass

    def _on_rollout_end(self) -> None:
        pass

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        pass

    def update_locals(self, locals_: dict[str, Any]) -> None:
        """SB3's ``update_locals``: merge ``locals_`` into ``self.locals``."""
        self.locals.update(locals_)


class CallbackList(BaseCallback):
    """Several callbacks as one; every one runs at each hook, and training stops when any says so."""

    def __init__(self, callbacks: list[BaseCallback]):
        super().__init__()
        self.callbacks = list(callbacks)

    def _init_callback(self) -> None:
        for cb in self.callbacks:
            cb.init_callback(self.model)

    def on_start(self, model: PPO) -> None:  # noqa: D102 (BaseCallback's)
        super().on_start(model)
        for cb in self.callbacks:
            cb.on_start(model)

    def on_step(self, model: PPO | None = None, metrics: dict | None = None) -> bool:  # noqa: D102
        super().on_step(model, metrics)
        results = [cb.on_step(model, metrics) for cb in self.callbacks]  # all run, as SB3's list
        return all(results)

    def on_end(self, model: PPO) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_end(model)


class EventCallback(BaseCallback):
    """A callback that triggers a child ``callback`` on its events (SB3's ``EventCallback``)."""

    def __init__(self, callback: BaseCallback | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.callback = callback
        if callback is not None:
            callback.parent = self

    def _init_callback(self) -> None:
        if self.callback is not None:
            self.callback.init_callback(self.model)

    def _on_event(self) -> bool:
        return self.callback.on_step() if self.callback is not None else True


class StepPeriod:
    """Fires once each time the env-step count crosses a multiple of ``every`` (0: never)."""

    def __init__(self, every: int):
        self.every, self.last = int(every), 0

    def start(self, step: int) -> None:
        """Count from ``step`` (training's start)."""
        self.last = step

    def due(self, step: int) -> bool:
        """Whether a multiple of ``every`` lies in ``(last, step]``; moves ``last`` on."""
        crossed = self.every > 0 and step // self.every > self.last // self.every
        self.last = step
        return crossed


def _env_steps(freq: int, model: PPO, name: str) -> int:
    """SB3's call-counted ``freq`` (vectorized steps) in env steps: ``freq * num_envs``."""
    if isinstance(freq, bool) or not isinstance(freq, int) or freq < 0:
        raise ConfigError(f"{name}={freq!r} is not allowed; give a whole number of steps >= 0")
    return freq * model.config.num_envs


class EveryNTimesteps(EventCallback):
    """Trigger ``callback`` every ``n_steps`` env steps (after the update that crosses each multiple)."""

    def __init__(self, n_steps: int, callback: BaseCallback):
        super().__init__(callback)
        self.period = StepPeriod(n_steps)

    def _on_training_start(self) -> None:
        self.period.start(self.num_timesteps)

    def _on_step(self) -> bool:
        return self._on_event() if self.period.due(self.num_timesteps) else True


class CheckpointCallback(BaseCallback):
    """Save the model every ``save_freq`` calls (SB3's unit: ``save_freq * num_envs`` env steps) to
    ``save_path/<name_prefix>_<steps>_steps`` (a ppokit model directory: safetensors + JSON, with the
    normalisation statistics, so ``save_vecnormalize`` needs no separate file)."""

    def __init__(
        self,
        save_freq: int,
        save_path: str | Path,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.save_freq, self.save_path, self.name_prefix = save_freq, Path(save_path), name_prefix
        self.period = StepPeriod(0)

    def _init_callback(self) -> None:
        self.period = StepPeriod(_env_steps(self.save_freq, self.model, "save_freq"))
        self.save_path.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self.period.start(self.num_timesteps)

    def _on_step(self) -> bool:
        if self.period.due(self.num_timesteps):
            path = self.model.save(self.save_path / f"{self.name_prefix}_{self.num_timesteps}_steps")
            if self.verbose >= 2:
                print(f"Saving model checkpoint to {path}", flush=True)
        return True


class EvalCallback(EventCallback):
    """Evaluate the model on ``eval_env`` every ``eval_freq`` calls (SB3's unit: ``eval_freq *
    num_envs`` env steps, checked after each update) over ``n_eval_episodes`` episodes; keep the best
    model (``best_model_save_path/best_model``, a ppokit model directory with its normaliser), write
    ``log_path/evaluations.npz`` (``timesteps``, ``results``, ``ep_lengths``, as SB3's; numpy arrays,
    no pickle), and trigger ``callback_on_new_best`` / ``callback_after_eval``."""

    def __init__(
        self,
        eval_env: Any,
        callback_on_new_best: BaseCallback | None = None,
        callback_after_eval: BaseCallback | None = None,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        log_path: str | Path | None = None,
        best_model_save_path: str | Path | None = None,
        deterministic: bool = True,
        render: bool = False,
        verbose: int = 1,
        warn: bool = True,
    ):
        super().__init__(callback_after_eval, verbose)
        self.callback_on_new_best = callback_on_new_best
        if callback_on_new_best is not None:
            callback_on_new_best.parent = self
        self.eval_env, self.n_eval_episodes, self.eval_freq = eval_env, n_eval_episodes, eval_freq
        self.deterministic, self.render = deterministic, render
        self.log_path = None if log_path is None else Path(log_path) / "evaluations"
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.best_mean_reward, self.last_mean_reward = -np.inf, -np.inf
        self.evaluations_timesteps: list[int] = []
        self.evaluations_results: list[list[float]] = []
        self.evaluations_length: list[list[int]] = []
        self.period = StepPeriod(0)

    def _init_callback(self) -> None:
        super()._init_callback()
        if self.callback_on_new_best is not None:
            self.callback_on_new_best.init_callback(self.model)
        self.period = StepPeriod(_env_steps(self.eval_freq, self.model, "eval_freq"))
        for folder in (self.best_model_save_path, None if self.log_path is None else self.log_path.parent):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    def _on_training_start(self) -> None:
        self.period.start(self.num_timesteps)

    def _on_step(self) -> bool:
        if not self.period.due(self.num_timesteps):
            return True
        rewards, lengths = evaluate_policy(
            self.model, self.eval_env, self.n_eval_episodes, self.deterministic, self.render,
            return_episode_rewards=True,
        )  # fmt: skip
        self._record(rewards, lengths)
        go_on = True
        if self.last_mean_reward > self.best_mean_reward:
            if self.verbose >= 1:
                print("New best mean reward!", flush=True)
            if self.best_model_save_path is not None:
                self.model.save(self.best_model_save_path / "best_model")
            self.best_mean_reward = self.last_mean_reward
            if self.callback_on_new_best is not None:
                go_on = self.callback_on_new_best.on_step()
        return self._on_event() and go_on

    def _record(self, rewards: list[float], lengths: list[int]) -> None:
        """Keep this evaluation, write the log, print the line SB3 prints."""
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append(list(rewards))
        self.evaluations_length.append(list(lengths))
        if self.log_path is not None:
            np.savez(
                self.log_path,
                timesteps=np.asarray(self.evaluations_timesteps),
                results=np.asarray(self.evaluations_results),
                ep_lengths=np.asarray(self.evaluations_length),
            )
        self.last_mean_reward = float(np.mean(rewards))
        if self.verbose >= 1:
            print(
                f"Eval num_timesteps={self.num_timesteps}, episode_reward={self.last_mean_reward:.2f} "
                f"+/- {np.std(rewards):.2f}\n"
                f"Episode length: {np.mean(lengths):.2f} +/- {np.std(lengths):.2f}",
                flush=True,
            )


class StopTrainingOnRewardThreshold(BaseCallback):
    """As ``EvalCallback(callback_on_new_best=...)``: stop once the best mean reward reaches
    ``reward_threshold``."""

    def __init__(self, reward_threshold: float, verbose: int = 0):
        super().__init__(verbose)
        self.reward_threshold = reward_threshold

    def _on_step(self) -> bool:
        if not isinstance(self.parent, EvalCallback):
            raise ConfigError("StopTrainingOnRewardThreshold is not allowed alone; pass it to EvalCallback")
        go_on = bool(self.parent.best_mean_reward < self.reward_threshold)
        if not go_on and self.verbose >= 1:
            print(
                f"Stopping training: the best mean reward {self.parent.best_mean_reward:.2f} reached "
                f"the threshold {self.reward_threshold}",
                flush=True,
            )
        return go_on


class StopTrainingOnNoModelImprovement(BaseCallback):
    """As ``EvalCallback(callback_after_eval=...)``: stop when ``max_no_improvement_evals`` evaluations in
    a row did not improve the best mean reward, counting only after the first ``min_evals``."""

    def __init__(self, max_no_improvement_evals: int, min_evals: int = 0, verbose: int = 0):
        super().__init__(verbose)
        self.max_no_improvement_evals, self.min_evals = max_no_improvement_evals, min_evals
        self.last_best, self.no_improvement_evals = -np.inf, 0

    def _on_step(self) -> bool:
        if not isinstance(self.parent, EvalCallback):
            raise ConfigError(
                "StopTrainingOnNoModelImprovement is not allowed alone; pass it to EvalCallback"
            )
        if self.n_calls > self.min_evals:
            improved = self.parent.best_mean_reward > self.last_best
            self.no_improvement_evals = 0 if improved else self.no_improvement_evals + 1
        self.last_best = self.parent.best_mean_reward
        go_on = self.no_improvement_evals <= self.max_no_improvement_evals
        if not go_on and self.verbose >= 1:
            print(
                f"Stopping training: no improvement in the last {self.no_improvement_evals} evaluations",
                flush=True,
            )
        return go_on


# -- the run loop's side --------------------------------------------------------------------------------
class FunctionHook:
    """A plain ``f(model, metrics) -> bool | None`` as a hook object."""

    def __init__(self, fn: Callable[[Any, dict], bool | None]):
        self.fn = fn

    def on_step(self, model: PPO, metrics: dict) -> bool | None:
        """Call the function."""
        return self.fn(model, metrics)


class VerboseTable:
    """SB3's ``verbose=1`` habit: a table of the update's metrics every ``log_interval`` updates,
    flushed at once (so a log file or a pipe shows it while training runs, not at exit)."""

    def __init__(self, model: PPO):
        self.options = model.sb3

    def on_start(self, model: PPO) -> None:
        """Say which device trains, as SB3 does."""
        print(f"Using {model.device} device", flush=True)

    def on_step(self, model: PPO, metrics: dict) -> None:
        """Print the table on every ``log_interval``-th update."""
        if model.num_updates % self.options.log_interval == 0:
            print(format_table(metrics), flush=True)


def format_table(metrics: dict[str, Any]) -> str:
    """Metrics as SB3's boxed table, grouped by their ``section/`` prefix."""
    rows: list[tuple[str, str]] = []
    for section in sorted({k.partition("/")[0] for k in metrics if "/" in k}):
        rows.append((f"{section}/", ""))
        for key in sorted(k for k in metrics if k.startswith(section + "/")):
            v = metrics[key]
            text = f"{v:.3g}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"
            rows.append((f"   {key.partition('/')[2]}", text))
    w1, w2 = max(len(a) for a, _ in rows), max(len(b) for _, b in rows)
    line = "-" * (w1 + w2 + 7)
    return "\n".join([line, *(f"| {a:<{w1}} | {b:<{w2}} |" for a, b in rows), line])


class Hooks:
    """The three run-loop hooks over several callback objects (all run; any False stops)."""

    def __init__(self, parts: list[Any]):
        self.parts = parts

    def on_start(self, model: PPO) -> None:
        """Call each part's ``on_start``."""
        for part in self.parts:
            if hasattr(part, "on_start"):
                part.on_start(model)

    def on_step(self, model: PPO, metrics: dict) -> bool:
        """Call each part's ``on_step``; False when any returned False."""
        results = [part.on_step(model, metrics) for part in self.parts if hasattr(part, "on_step")]
        return all(r is not False for r in results)

    def on_end(self, model: PPO) -> None:
        """Call each part's ``on_end``."""
        for part in self.parts:
            if hasattr(part, "on_end"):
                part.on_end(model)


def loop_hooks(model: PPO, callback: Any) -> Hooks:
    """``learn``'s ``callback`` (see the module docstring) as one ``Hooks``, with the verbose table of
    ``PPO(..., verbose=1)``. Anything else is a ConfigError naming what was passed."""
    given = callback if isinstance(callback, (list, tuple)) else ([] if callback is None else [callback])
    parts: list[Any] = []
    for cb in given:
        if any(hasattr(cb, hook) for hook in ("on_start", "on_step", "on_end")):
            parts.append(cb)
        elif callable(cb):
            parts.append(FunctionHook(cb))
        else:
            raise ConfigError(
                f"callback={cb!r} is not allowed; pass a function f(model, metrics), a BaseCallback, an "
                "object with on_start/on_step/on_end, or a list of these"
            )
    options = getattr(model, "sb3", None)
    if options is not None and options.verbose >= 1:
        parts.insert(0, VerboseTable(model))
    return Hooks(parts)
