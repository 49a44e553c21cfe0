"""The bookkeeping around a language-model trainer's steps: run directory, metrics, evaluation,
checkpoints, progress bar, samples and plots. Kept apart from the algorithm files so each reads top
to bottom; any trainer with ``train_step``/``evaluate``/``save_checkpoint``/``write_report`` (an
``LMTrainer``) runs through it.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ppokit.errors import ConfigError, NonFiniteError
from ppokit.llm.reward_checks import RewardFunctionError
from ppokit.llm.trl_compat import Callbacks
from ppokit.tracking import PROCESS_START, ProgressBar, Tracker, trim_csv
from ppokit.train.rundir import RunDirLock

COMPLETIONS = "completions.jsonl"  # the completions table: one JSON object per sampled completion
_clock = time.monotonic  # wall-clock of checkpoint_every_seconds (a test moves it)


class WandbReporter:
    """``report_to: [wandb]``: the metrics rows to Weights & Biases (``WANDB_MODE=offline`` writes them
    under RUN_DIR/wandb without a network)."""

    def __init__(self, trainer: Any):
        try:
            import wandb
        except ImportError:
            raise ConfigError("report_to=['wandb'] needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        run_dir = trainer.run_dir
        self.run = wandb.init(
            project="ppokit",
            name=run_dir.name,
            dir=str(run_dir),
            config=trainer.config.to_dict(),
            reinit=True,
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row of scalars at ``step``."""
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.run.log(row, step=step)

    def close(self) -> None:
        """Finish the wandb run."""
        self.run.finish()


class Reporters:
    """metrics.csv and TensorBoard (``Tracker``) plus wandb, as ``report_to`` says."""

    def __init__(self, trainer: Any):
        cfg = trainer.config
        tensorboard = cfg.tensorboard if cfg.report_to is None else "tensorboard" in cfg.report_to
        self.tracker = Tracker(trainer.run_dir, tensorboard=tensorboard, append=trainer.step > 0)
        self.wandb = WandbReporter(trainer) if "wandb" in (cfg.report_to or []) else None
        self.completions = trainer.run_dir / COMPLETIONS

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One metrics row."""
        self.tracker.log(step, metrics)
        if self.wandb is not None:
            self.wandb.log(step, metrics)

    def log_completions(
        self, step: int, samples: list[dict[str, Any]], columns: dict[str, list[Any]]
    ) -> None:
        """Append the step's sampled completions (with columns reward functions added by
        ``log_extra``) to RUN_DIR/completions.jsonl."""
        with open(self.completions, "a") as f:
            for i, sample in enumerate(samples):
                extra = {k: v[i] for k, v in columns.items() if i < len(v)}
                f.write(json.dumps({"step": step, **sample, **extra}, default=str) + "\n")

    def close(self) -> None:
        """Close every writer."""
        self.tracker.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


def _tracker(trainer: Any) -> Reporters | None:
    if trainer.run_dir is None:
        return None
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer.config.save_yaml(trainer.run_dir / "config.yaml")
    if trainer.step > 0:  # resumed: rows after the checkpoint's step are work that was lost
        trim_csv(trainer.run_dir / "metrics.csv", "step", trainer.step)
        _trim_completions(trainer.run_dir / COMPLETIONS, trainer.step)
    return Reporters(trainer)


def _trim_completions(path: Any, step: int) -> None:
    """Drop the completions of steps after ``step`` (a resumed run redoes them)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def _log(tracker: Reporters | None, step: int, metrics: dict[str, Any]) -> None:
    if tracker is not None:
        tracker.log(step, {"step": step, **metrics, "time/elapsed_s": time.time() - PROCESS_START})


def run_training(trainer: Any) -> dict[str, Any]:
    """Drive ``trainer.train_step()`` to ``max_steps`` (or ``max_seconds``); returns a summary dict.

    Held-out accuracy is measured before the first step (kept across resumes), every ``eval_every``
    steps and after the last one, which is logged in the last step's row: one metrics row per step.
    Checkpoints every ``checkpoint_every`` steps and/or ``checkpoint_every_seconds`` of wall-clock (300
    by default) and at the end; a ``NonFiniteError`` (too many non-finite steps in a row) or a
    ``RewardFunctionError`` writes a checkpoint first. ``trainer.stop_requested`` (a signal number,
    set by ``cli/signals.py``) ends the run after the current step with a checkpoint and
    ``interrupted_by`` in the summary. The run directory is locked
    (``RunDirLock``) while training: a second process writing it gets a one-line ``RunDirError``.
    """
    # one writer per run directory, as on the classic side (ppokit/train/rundir.py), while it trains;
    # the command line takes it before it creates the run's config.yaml and hands it over here
    lock = trainer.__dict__.pop("run_dir_lock", None)
    if lock is None and trainer.run_dir is not None:
        lock = RunDirLock(trainer.run_dir)
    tracker = None
    try:
        tracker = _tracker(trainer)
        try:
            return _run(trainer, tracker)
        except RewardFunctionError as e:  # the work so far is kept: fix the function, then resume
            raise _checkpointed(trainer, e) from None
    finally:
        if tracker is not None:
            tracker.close()
        if lock is not None:
            lock.release()


def _checkpointed(trainer: Any, error: RewardFunctionError) -> RewardFunctionError:
    """``error`` with a checkpoint of the last completed step written first (with a run directory)."""
    if trainer.run_dir is None:
        return error
    path = trainer.save_checkpoint()
    return RewardFunctionError(
        f"{error}; checkpoint of step {trainer.step}: {path} (fix the function, then `ppokit resume "
        f"{trainer.run_dir}`)"
    )


def _run(trainer: Any, tracker: Tracker | None) -> dict[str, Any]:
    cfg = trainer.config
    summary = _evaluate_before(trainer, tracker)
    start, start_step, metrics = time.perf_counter(), trainer.step, {}
    time_up = lambda: bool(cfg.max_seconds) and time.perf_counter() - start >= cfg.max_seconds
    final: tuple[dict[str, Any], list[dict[str, Any]]] = ({}, [])  # the last step's evaluation
    headline = getattr(trainer, "progress_metric", "reward")  # the metric the bar shows
    bar = ProgressBar(
        cfg.max_steps,
        description=getattr(trainer, "algo", "grpo"),
        metric_name=headline,
        enabled=trainer.progress,
        unit="steps",
    )
    saved_at = _clock()  # checkpoint_every_seconds counts from here and from each checkpoint
    stopped = None
    callbacks = Callbacks(trainer.callbacks, trainer)
    callbacks.begin()
    with bar:
        bar.update(trainer.step, done_since_start=0)
        while trainer.step < cfg.max_steps and not time_up():
            stopped = getattr(trainer, "stop_requested", None)  # SIGINT/SIGTERM (cli/signals.py)
            if stopped is not None:
                break
            callbacks.step_begin()
            metrics = _train_step(trainer, tracker)
            # the last step: by count, or because the time is up (checked here, so the final
            # evaluation lands in this step's row instead of a second row for the same step)
            last = trainer.step >= cfg.max_steps or time_up()
            evaluated = _evaluate_and_log(trainer, tracker, metrics, last)
            if last and evaluated is not None:
                final = evaluated
            if tracker is not None and _checkpoint_due(cfg, trainer.step, saved_at):
                trainer.save_checkpoint()
                saved_at = _clock()
            bar.update(trainer.step, metrics.get(headline), done_since_start=trainer.step - start_step)
            if callbacks.step_end(metrics):  # a callback asked to stop
                break
    callbacks.end()
    train_seconds = time.perf_counter() - start
    if stopped is not None:  # stop now: a checkpoint on this step boundary, no final evaluation
        summary.update(
            {"steps": trainer.step, "interrupted_by": stopped, "last_reward": metrics.get(headline)}
        )
        if tracker is not None:
            tracker.close()
            summary["checkpoint"] = str(trainer.save_checkpoint())
            summary["run_dir"] = str(trainer.run_dir)
        return summary
    return _finish(trainer, tracker, summary, final, metrics.get(headline), train_seconds)


def _evaluate_before(trainer: Any, tracker: Reporters | None) -> dict[str, Any]:
    """The summary's start: held-out accuracy before the first step, logged at step 0 (a resumed run
    keeps the one it measured then)."""
    summary: dict[str, Any] = {}
    if trainer.eval_rows and trainer.step == 0:
        before, _ = trainer.evaluate()
        trainer.accuracy_before = before.get("eval/accuracy")
        summary["reward_before"] = before.get("eval/reward")
        _log(tracker, 0, before)
    return summary


def _train_step(trainer: Any, tracker: Reporters | None) -> dict[str, Any]:
    """One step of the algorithm, with what its reward functions logged, and its completions in the
    completions table; a ``NonFiniteError`` stops the run with an emergency checkpoint."""
    cfg = trainer.config
    try:
        metrics = trainer.train_step()
    except NonFiniteError as e:
        raise trainer.emergency_stop(e) from None
    logged, columns = trainer.pop_reward_logs()  # log_metric / log_extra of the reward functions
    metrics.update(logged)
    if tracker is not None and trainer.step % cfg.log_every == 0:
        tracker.log_completions(trainer.step, trainer.last_samples[: cfg.num_samples], columns)
    return metrics


def _evaluate_and_log(
    trainer: Any, tracker: Reporters | None, metrics: dict[str, Any], last: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The held-out evaluation when it is due (every ``eval_every`` steps and at the last) into the
    step's metrics, and the metrics row (every ``log_every`` steps and at the last); returns the
    evaluation when one ran."""
    cfg = trainer.config
    evaluated = None
    if trainer.eval_rows and (last or (cfg.eval_every and trainer.step % cfg.eval_every == 0)):
        evaluated = trainer.evaluate()
        metrics.update(evaluated[0])
    if last or trainer.step % cfg.log_every == 0:
        _log(tracker, trainer.step, metrics)
    return evaluated


def _checkpoint_due(cfg: Any, step: int, saved_at: float) -> bool:
    """Whether ``step`` is a multiple of ``checkpoint_every`` or ``checkpoint_every_seconds`` have passed
    since ``saved_at``."""
    every_steps = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
    every_seconds = cfg.checkpoint_every_seconds and _clock() - saved_at >= cfg.checkpoint_every_seconds
    return bool(every_steps or every_seconds)


def _finish(
    trainer: Any,
    tracker: Reporters | None,
    summary: dict[str, Any],
    final: tuple[dict[str, Any], list[dict[str, Any]]],
    last_reward: Any,
    train_seconds: float,
) -> dict[str, Any]:
    """The summary of a run that ended by steps, time or a callback: accuracy before and after, and,
    with a run directory, the final checkpoint and the report (samples.md, plots)."""
    evaluated, records = final
    if trainer.eval_rows:
        if not evaluated:  # no step ran (already at max_steps, or max_seconds spent before the first)
            evaluated, records = trainer.evaluate()
        summary.update(
            {
                "accuracy_before": trainer.accuracy_before,
                "accuracy_after": evaluated.get("eval/accuracy"),
                "reward_after": evaluated.get("eval/reward"),
            }
        )
    summary.update(
        {
            "steps": trainer.step,
            "train_seconds": round(train_seconds, 2),
            "last_reward": last_reward,
            "num_tokens": trainer.num_tokens,
        }
    )
    if tracker is not None:
        tracker.close()
        summary["checkpoint"] = str(trainer.save_checkpoint())
        summary["plots"] = [str(p) for p in trainer.write_report(records)]
        summary["run_dir"] = str(trainer.run_dir)
    return summary
