"""What a language-model run trains on: prompt rows (from a built-in task or a JSONL file), reward
functions (``module:function`` specs, the task's own, a reward model), held-out rows and the accuracy
function. Shared by ``ppokit grpo``, ``ppokit rlhf-ppo`` and their resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Prompt rows of a JSONL file: one JSON object per line, each with a ``prompt`` key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts file {path!r} does not exist")
    rows = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts file {path!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n} is not valid JSON: {e}") from None
        if not isinstance(row, dict) or "prompt" not in row:
            raise ConfigError(f"{path}:{n} must be a JSON object with a 'prompt' key")
        rows.append(row)
    if not rows:
        raise ConfigError(f"prompts file {path!r} holds no prompts")
    return rows


def read_inputs(cfg: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """``{"train", "eval", "accuracy", "rewards"}``: prompts, held-out rows, accuracy function and reward
    functions, from the task or from the user's files (``sources``: ``prompts``, ``eval_prompts``,
    ``reward`` specs). With ``cfg.reward_model`` (RLHF-PPO) the reward model scores the completions,
    after any ``--reward`` functions, and the task's own functions are not used."""
    from ppokit.llm.rewards import load_reward_function
    from ppokit.llm.tasks import make_task

    reward_model = getattr(cfg, "reward_model", None)
    task = make_task(cfg.task, cfg.task_digits, cfg.seed, cfg.eval_prompts)
    if sources.get("prompts"):  # JSONL, JSON or Parquet (trl_compat.read_rows)
        from ppokit.llm.trl_compat import read_rows

        train = read_rows(sources["prompts"])
        evals = read_rows(sources["eval_prompts"]) if sources.get("eval_prompts") else []
        accuracy = None
    else:
        train, evals, accuracy = task.train_rows, task.eval_rows, task.accuracy_fn
    rewards = [load_reward_function(s) for s in sources.get("reward") or []]
    what = "reward function"
    if reward_model:
        from ppokit.llm.value_head import RewardModel

        rewards.append(RewardModel(reward_model, cfg.device))
        what = "reward (the --reward functions, then the reward model)"
    rewards = rewards or task.reward_funcs
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(rewards):
        raise ConfigError(
            f"reward_weights={cfg.reward_weights!r} is not allowed; give one weight per {what} "
            f"({len(rewards)}: {[getattr(f, '__name__', type(f).__name__) for f in rewards]})"
        )
    return {"train": train, "eval": evals, "accuracy": accuracy, "rewards": rewards}
