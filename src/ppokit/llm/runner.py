"""What ``ppokit grpo`` and ``ppokit rlhf-ppo`` do, as functions of the trainer class: build or load
the model, the prompts and the rewards, warm start the built-in tiny model, train (or resume), and
return the JSON summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppokit import distributed
from ppokit.config import apply_overrides
from ppokit.errors import ConfigError
from ppokit.llm.base import LMTrainer
from ppokit.seeding import seed_everything

SOURCES = "sources.json"
# (cfg, sources) -> {"train", "eval", "accuracy", "rewards"}: the run's prompts and scoring
InputsFn = Callable[[Any, dict[str, Any]], dict[str, Any]]


def read_inputs(cfg: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Prompts, rewards, held-out rows and accuracy function, from the task or from the user's files."""
    from ppokit.llm.cli import _read_jsonl
    from ppokit.llm.rewards import load_reward_function
    from ppokit.llm.tasks import make_task

    task = make_task(cfg.task, cfg.task_digits, cfg.seed, cfg.eval_prompts)
    if sources.get("prompts"):
        train = _read_jsonl(sources["prompts"])
        evals = _read_jsonl(sources["eval_prompts"]) if sources.get("eval_prompts") else []
        accuracy = None
    else:
        train, evals, accuracy = task.train_rows, task.eval_rows, task.accuracy_fn
    rewards = [load_reward_function(s) for s in sources.get("reward") or []] or task.reward_funcs
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(rewards):
        raise ConfigError(
            f"reward_weights={cfg.reward_weights!r} is not allowed; give one weight per reward "
            f"function ({len(rewards)}: {[getattr(f, '__name__', f) for f in rewards]})"
        )
    return {"train": train, "eval": evals, "accuracy": accuracy, "rewards": rewards}


def _model(cfg: Any, inputs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Load the user's model, or build the tiny one and warm start it (measured before and after)."""
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained

    if cfg.model:
        model, tokenizer = load_pretrained(cfg.model, cfg.device)
        return model, tokenizer, {}
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.tiny_model, tokenizer, seed=cfg.seed).to(cfg.device)
    info: dict[str, Any] = {}
    if cfg.warm_start.steps and inputs["accuracy"] is not None:
        from ppokit.llm.tasks import warm_start

        # LMTrainer's greedy evaluation alone: the algorithm (and a reference copy) is not needed here.
        probe = LMTrainer(model, tokenizer, **_trainer_args(cfg, inputs, run_dir=None, progress=False))
        # under torchrun only rank 0 evaluates (the others get {}), hence .get
        info["warm_start_accuracy_before"] = probe.evaluate()[0].get("eval/accuracy")
        ws = cfg.warm_start
        stats = warm_start(
            model, tokenizer, inputs["train"], ws.steps, ws.batch_size, ws.learning_rate, cfg.seed, cfg.device
        )
        info["warm_start_accuracy_after"] = probe.evaluate()[0].get("eval/accuracy")
        info["warm_start_seconds"] = round(stats["warm_start/seconds"], 2)
        info["warm_start_steps"] = ws.steps
    return model, tokenizer, info


def _trainer_args(cfg: Any, inputs: dict[str, Any], run_dir: Path | None, progress: bool) -> dict[str, Any]:
    """The keyword arguments of a trainer, or of its ``resume``, beyond the model."""
    return {
        "reward_funcs": inputs["rewards"],
        "train_prompts": inputs["train"],
        "config": cfg,
        "eval_prompts": inputs["eval"],
        "accuracy_fn": inputs["accuracy"],
        "run_dir": run_dir,
        "progress": progress,
    }


def start_run(
    trainer_cls: type[LMTrainer],
    cfg: Any,
    run_dir: str | Path,
    sources: dict[str, Any],
    progress: bool = True,
    inputs_fn: InputsFn = read_inputs,
) -> dict[str, Any]:
    """A fresh run of ``trainer_cls`` into ``run_dir``; returns the summary the verb prints as JSON.

    ``inputs_fn(cfg, sources)`` gives the prompts, rewards, held-out rows and accuracy function.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ConfigError(
            f"--run-dir {str(run_dir)!r} already holds checkpoints; use --resume {run_dir} or a new dir"
        )
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    inputs = inputs_fn(cfg, sources)
    model, tokenizer, info = _model(cfg, inputs)
    if distributed.init(cfg.device).is_main:  # under torchrun only rank 0 writes the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SOURCES).write_text(json.dumps(sources))
    trainer = trainer_cls(model, tokenizer, **_trainer_args(cfg, inputs, run_dir, progress))
    return _finish(cfg, trainer.train(), info, started)


def resume_run(
    trainer_cls: type[LMTrainer],
    run_dir: str | Path,
    overrides: list[str],
    max_steps: int | None,
    progress: bool = True,
    inputs_fn: InputsFn = read_inputs,
) -> dict[str, Any]:
    """Continue ``run_dir`` from its newest complete checkpoint (config from the run, plus overrides)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: no config.yaml there (not a run directory)")
    config_cls = trainer_cls.config_class()
    data = config_cls.load_yaml(run_dir / "config.yaml", overrides).to_dict()
    if max_steps is not None:
        data = apply_overrides(data, [f"max_steps={max_steps}"])
    cfg = config_cls.from_dict(data)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    sources = json.loads((run_dir / SOURCES).read_text()) if (run_dir / SOURCES).is_file() else {}
    inputs = inputs_fn(cfg, sources)
    trainer = trainer_cls.resume(run_dir, **_trainer_args(cfg, inputs, run_dir, progress))
    resumed_from = trainer.step
    return _finish(cfg, trainer.train(), {"resumed_from_step": resumed_from}, started)


def _finish(cfg: Any, summary: dict[str, Any], info: dict[str, Any], started: float) -> dict[str, Any]:
    out = {
        "task": cfg.task if not cfg.model else None,
        "model": cfg.model,
        **info,
        **summary,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if out.get("accuracy_before") is not None and out.get("accuracy_after") is not None:
        out["accuracy_gain"] = round(out["accuracy_after"] - out["accuracy_before"], 4)
    return out
