"""Hyperparameter search for PPO with Optuna (``ppokit tune``), in the manner of rl-baselines3-zoo's
``--optimize``: a sampler proposes a config, the trial trains it for a fixed budget, evaluates it a few
times on the way and reports each evaluation, and a median pruner stops trials that fall behind the
median of earlier trials at the same step (Optuna's MedianPruner).

The study lives in a real database (SQLite by default, ``<tune dir>/study.db``), so a study that was
interrupted continues where it stopped: ``--n-trials N`` is the number of finished trials the study
should hold, and a second run with the same directory only runs the missing ones. A trial that was
running when the process died is marked failed on resume (it holds no result to trust).

Optuna is an optional dependency: ``pip install 'ppokit[tune]'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.errors import ConfigError, MissingDependencyError, NonFiniteError
from ppokit.rl.config import PPOConfig
from ppokit.train.signals import StopNow, StopOnSignal

if TYPE_CHECKING:
    import optuna

# The search space (after rl-zoo's PPO sampler, hyperparams_opt.py, with ppokit's key names): choices
# for the discrete knobs, log-uniform ranges for the coefficients that span decades.
BATCH_SIZES = (32, 64, 128, 256, 512)
N_STEPS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
GAMMAS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
GAE_LAMBDAS = (0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)
CLIP_RANGES = (0.1, 0.2, 0.3, 0.4)
N_EPOCHS = (1, 5, 10, 20)
MAX_GRAD_NORMS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 5.0)
NETWORKS = {"small": [64, 64], "medium": [256, 256]}
ACTIVATIONS = ("tanh", "relu")


def optuna_module() -> Any:
    """``import optuna``, or a MissingDependencyError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("ppokit tune needs Optuna: pip install 'ppokit[tune]'") from None
    return optuna


def n_steps_choices(budget: int, num_envs: int, evaluations: int) -> tuple[int, ...]:
    """The rollout lengths that give every evaluation interval of a ``budget``-step trial at least one
    update (a rollout longer than that would leave the pruner nothing to compare)."""
    per_eval = budget // max(1, evaluations)
    fit = tuple(n for n in N_STEPS if n * num_envs <= per_eval)
    return fit or (N_STEPS[0],)


def sample_ppo_params(trial: optuna.Trial, num_envs: int, n_steps: tuple[int, ...]) -> dict[str, Any]:
    """A PPO config proposal (PPOConfig keys) from ``trial``. ``batch_size`` is capped at the rollout
    size ``n_steps * num_envs`` (both are powers of two here, so it divides it)."""
    rollout = trial.suggest_categorical("n_steps", n_steps) * num_envs
    batch = trial.suggest_categorical("batch_size", BATCH_SIZES)
    hidden = trial.suggest_categorical("network", tuple(NETWORKS))
    return {
        "n_steps": rollout // num_envs,
        "batch_size": min(batch, rollout),
        "gamma": trial.suggest_categorical("gamma", GAMMAS),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "clip_range": trial.suggest_categorical("clip_range", CLIP_RANGES),
        "n_epochs": trial.suggest_categorical("n_epochs", N_EPOCHS),
        "gae_lambda": trial.suggest_categorical("gae_lambda", GAE_LAMBDAS),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", MAX_GRAD_NORMS),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
        "network": {
            "hidden_sizes": NETWORKS[hidden],
            "activation": trial.suggest_categorical("activation", ACTIVATIONS),
        },
    }


@dataclass
class TuneSettings:
    """What a study runs: the base config, the trials' budget and evaluations, and where it is stored."""

    base: PPOConfig
    out_dir: Path
    n_trials: int = 20
    budget: int = 20_000
    evaluations: int = 4
    eval_episodes: int = 5
    storage: str | None = None
    study_name: str | None = None
    pruner: str = "median"
    seed: int = 0

    @property
    def storage_url(self) -> str:
        """The study's database URL (default: SQLite at ``out_dir/study.db``)."""
        return self.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    @property
    def name(self) -> str:
        """The study's name in its database."""
        return self.study_name or f"ppokit-{self.base.env_id}"


def trial_config(settings: TuneSettings, params: dict[str, Any], budget: int | None = None) -> PPOConfig:
    """The base config with a trial's parameters (and the per-trial budget unless ``budget`` is given)."""
    data = settings.base.to_dict()
    network = {**data["network"], **params.get("network", {})}
    data.update({k: v for k, v in params.items() if k != "network"}, network=network)
    data.update(total_timesteps=budget or settings.budget, tensorboard=False)
    return PPOConfig.from_dict(data)


def objective(settings: TuneSettings, trial: optuna.Trial) -> float:
    """Train one proposal for ``settings.budget`` steps; report the mean evaluation return after each
    of ``settings.evaluations`` equal parts (the pruner reads them); return the last one."""
    optuna = optuna_module()
    from ppokit.rl.ppo import PPO

    n_steps = n_steps_choices(settings.budget, settings.base.num_envs, settings.evaluations)
    params = sample_ppo_params(trial, settings.base.num_envs, n_steps)
    trial.set_user_attr("config_params", params)  # the PPOConfig keys, for the best preset
    cfg = trial_config(settings, params).replace(seed=settings.seed + trial.number)
    every = settings.budget // settings.evaluations
    state = {"next": every, "step": 0, "value": -math.inf, "pruned": False}

    def evaluate_and_report(model: PPO, _metrics: dict) -> bool:
        if model.num_timesteps < state["next"]:
            return True
        state["next"] += every
        state["step"] += 1
        result = model.evaluate(settings.eval_episodes, seed=10_000 + trial.number * 1000)
        state["value"] = float(result["mean_return"])
        trial.report(state["value"], state["step"])
        state["pruned"] = trial.should_prune()
        return not state["pruned"]

    model = PPO(cfg.env_id, cfg)
    try:
        model.learn(callback=evaluate_and_report)
        if not state["pruned"] and state["step"] < settings.evaluations:
            state["next"] = 0  # the last part ended short of its mark: evaluate at the end
            evaluate_and_report(model, {})
    except NonFiniteError as e:  # a diverging proposal is a bad one, not a failed search
        trial.set_user_attr("pruned_because", str(e)[:200])
        raise optuna.TrialPruned() from None
    finally:
        model.close()
    if state["pruned"]:
        raise optuna.TrialPruned()
    return state["value"]


def open_study(settings: TuneSettings) -> optuna.Study:
    """Create the study, or load it from its database; trials left RUNNING by a process that died are
    marked FAIL (they will never report)."""
    optuna = optuna_module()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=settings.evaluations // 3)
        if settings.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=settings.name,
        storage=settings.storage_url,
        direction="maximize",
        load_if_exists=True,
        pruner=pruner,
    )
    _check_same_settings(study, settings)
    # a resumed study must not propose again what its first run proposed: seed by the trials so far
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=5, seed=settings.seed + len(study.trials))
    running = optuna.trial.TrialState.RUNNING
    for t in study.get_trials(deepcopy=False, states=(running,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def _check_same_settings(study: optuna.Study, settings: TuneSettings) -> None:
    """Record the settings that make trials comparable in a new study; refuse to resume one with others
    (values at another budget do not compare, and the sampler's n_steps choices depend on them)."""
    mine = {
        "budget": settings.budget,
        "evaluations": settings.evaluations,
        "num_envs": settings.base.num_envs,
        "env_id": settings.base.env_id,
    }
    if not study.user_attrs and not study.trials:
        for k, v in mine.items():
            study.set_user_attr(k, v)
        return
    for k, v in mine.items():
        if k in study.user_attrs and study.user_attrs[k] != v:
            raise ConfigError(
                f"{k}={v!r} is not allowed for study {settings.name!r} in {settings.storage_url}: it was "
                f"run with {k}={study.user_attrs[k]!r}; resume it with the same, or name a new --study-name"
            )


def finished(study: optuna.Study) -> int:
    """Trials that ran to the end or were pruned (failed ones are not counted)."""
    optuna = optuna_module()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(settings: TuneSettings, log: Any = print) -> optuna.Study:
    """Run trials until the study holds ``settings.n_trials`` finished ones; write the report."""
    optuna = optuna_module()
    from ppokit.rl.tune_report import write_report

    # ERROR: a failed trial's exception reaches the caller anyway (Optuna's WARNING repeats its traceback)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(settings)
    done = finished(study)
    if done:
        log(f"resuming study {settings.name!r} ({settings.storage_url}): {done} trials finished")

    def one_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "pruned" if trial.value is None else f"{trial.value:.2f}"
        log(f"trial {trial.number}: {trial.state.name.lower()} {value}")

    best_config = lambda params: trial_config(settings, params, budget=settings.base.total_timesteps)
    # Ctrl-C / SIGTERM: the first finishes the trial in progress, a second stops at once. A
    # KeyboardInterrupt raised straight into Optuna could land inside its SQLite commit and end in
    # Optuna's own internal error and exit code 1 instead of 130 (seen in CI).
    stopper = _StopRequest()
    try:
        with StopOnSignal(stopper, unit="trial"):
            while finished(study) < settings.n_trials and stopper.stop_requested is None:
                study.optimize(lambda t: objective(settings, t), n_trials=1, callbacks=[one_line])
    except BaseException as e:
        if stopper.stop_requested is None:  # a failure of its own, not the user's stop
            raise
        # the second signal, or an error Optuna raised because of it: the cut-off trial counts as
        # failed (open_study marks it so on resume if Optuna has not)
        stopper.stop_requested = getattr(e, "signum", stopper.stop_requested)
    if stopper.stop_requested is not None:
        write_report(study, settings, best_config, log)
        log(f"interrupted at {finished(study)} of {settings.n_trials} trials; run the same command to resume")
        raise StopNow(stopper.stop_requested)
    write_report(study, settings, best_config, log)
    return study


class _StopRequest:
    """What ``StopOnSignal`` sets: the signal that asked the study to stop."""

    stop_requested: int | None = None


__all__ = [
    "TuneSettings",
    "finished",
    "n_steps_choices",
    "objective",
    "open_study",
    "run_study",
    "sample_ppo_params",
    "trial_config",
]
