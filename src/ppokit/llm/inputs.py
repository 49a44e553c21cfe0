"""What a language-model run trains on: prompt rows (from a built-in task or a JSONL file), reward
functions (``module:function`` specs, the task's own, a reward model), held-out rows and the accuracy
function. Shared by ``ppokit grpo``, ``ppokit rlhf-ppo`` and their resume. Files are read by
``ppokit.llm.data``; the reward model is ``ppokit.llm.reward_model``."""

from __future__ import annotations

from typing import Any

from ppokit.errors import ConfigError
from ppokit.llm.config import LMConfig
from ppokit.llm.data import read_rows
from ppokit.llm.reward_model import RewardModel
from ppokit.llm.rewards import load_reward_function
from ppokit.llm.tasks import make_task


def read_inputs(cfg: LMConfig, sources: dict[str, Any]) -> dict[str, Any]:
    """``{"train", "eval", "accuracy", "rewards"}``: prompts, held-out rows, accuracy function and reward
    functions, from the task or from the user's files (``sources``: ``prompts``, ``eval_prompts``,
    ``reward`` specs). With ``cfg.reward_model`` (RLHF-PPO) the reward model scores the completions,
    after any ``--reward`` functions, and the task's own functions are not used."""
    reward_model = getattr(cfg, "reward_model", None)
    task = make_task(cfg.task, cfg.task_digits, cfg.seed, cfg.eval_prompts)
    if sources.get("prompts"):  # JSONL, JSON or Parquet (data.read_rows)
        train = read_rows(sources["prompts"])
        evals = read_rows(sources["eval_prompts"]) if sources.get("eval_prompts") else []
        accuracy = None
    else:
        train, evals, accuracy = task.train_rows, task.eval_rows, task.accuracy_fn
    rewards = [load_reward_function(s) for s in sources.get("reward") or []]
    what = "reward function"
    if reward_model:
        rewards.append(RewardModel(reward_model, cfg.device))
        what = "reward (the --reward functions, then the reward model)"
    rewards = rewards or task.reward_funcs
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(rewards):
        raise ConfigError(
            f"reward_weights={cfg.reward_weights!r} is not allowed; give one weight per {what} "
            f"({len(rewards)}: {[getattr(f, '__name__', type(f).__name__) for f in rewards]})"
        )
    return {"train": train, "eval": evals, "accuracy": accuracy, "rewards": rewards}
