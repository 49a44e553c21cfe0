"""The bookkeeping around a language-model trainer's steps: run directory, metrics, evaluation,
checkpoints, progress bar, samples and plots. Kept apart from ``grpo.py`` so the algorithm file reads
top to bottom, and so a PPO-for-RLHF trainer with the same ``train_step``/``evaluate``/
``save_checkpoint``/``write_report`` methods can reuse it as is.
"""

from __future__ import annotations

import time
from typing import Any

from ppokit.tracking import PROCESS_START, ProgressBar, Tracker


def _tracker(trainer: Any) -> Tracker | None:
    if trainer.run_dir is None:
        return None
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    trainer.config.save_yaml(trainer.run_dir / "config.yaml")
    # a resumed run (step > 0) appends to the metrics it already has
    return Tracker(trainer.run_dir, tensorboard=trainer.config.tensorboard, append=trainer.step > 0)


def _log(tracker: Tracker | None, step: int, metrics: dict[str, Any]) -> None:
    if tracker is not None:
        tracker.log(step, {"step": step, **metrics, "time/elapsed_s": time.time() - PROCESS_START})


def run_training(trainer: Any) -> dict[str, Any]:
    """Drive ``trainer.train_step()`` to ``max_steps`` (or ``max_seconds``); returns a summary dict.

    Held-out accuracy is measured before the first step (kept across resumes), every ``eval_every``
    steps and after the last one. Checkpoints every ``checkpoint_every`` steps and at the end.
    """
    cfg = trainer.config
    tracker = _tracker(trainer)
    has_eval = bool(trainer.eval_rows)
    summary: dict[str, Any] = {}
    if has_eval and trainer.step == 0:
        before, _ = trainer.evaluate()
        trainer.accuracy_before = before.get("eval/accuracy")
        summary["reward_before"] = before.get("eval/reward")
        _log(tracker, 0, before)
    start, start_step, last_eval, metrics = time.perf_counter(), trainer.step, {}, {}
    headline = getattr(trainer, "progress_metric", "reward")  # the metric the bar shows
    bar = ProgressBar(
        cfg.max_steps,
        description=getattr(trainer, "algo", "grpo"),
        metric_name=headline,
        enabled=trainer.progress,
        unit="steps",
    )
    with bar:
        bar.update(trainer.step, done_since_start=0)
        while trainer.step < cfg.max_steps:
            if cfg.max_seconds and time.perf_counter() - start >= cfg.max_seconds:
                break
            metrics = trainer.train_step()
            if has_eval and cfg.eval_every and trainer.step % cfg.eval_every == 0:
                last_eval, _ = trainer.evaluate()
                last_eval["eval_step"] = trainer.step
                metrics.update({k: v for k, v in last_eval.items() if k != "eval_step"})
            if trainer.step % cfg.log_every == 0:
                _log(tracker, trainer.step, metrics)
            if tracker is not None and cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0:
                trainer.save_checkpoint()
            bar.update(trainer.step, metrics.get(headline), done_since_start=trainer.step - start_step)
    train_seconds = time.perf_counter() - start
    records: list[dict[str, Any]] = []
    if has_eval:
        final, records = trainer.evaluate()
        if last_eval.get("eval_step") != trainer.step:
            _log(tracker, trainer.step, {**metrics, **final})
        summary.update(
            {
                "accuracy_before": trainer.accuracy_before,
                "accuracy_after": final.get("eval/accuracy"),
                "reward_after": final.get("eval/reward"),
            }
        )
    summary.update(
        {
            "steps": trainer.step,
            "train_seconds": round(train_seconds, 2),
            "last_reward": metrics.get(headline),
            "num_tokens": trainer.num_tokens,
        }
    )
    if tracker is not None:
        tracker.close()
        summary["checkpoint"] = str(trainer.save_checkpoint())
        summary["plots"] = [str(p) for p in trainer.write_report(records)]
        summary["run_dir"] = str(trainer.run_dir)
    return summary
