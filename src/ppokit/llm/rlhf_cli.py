"""``ppokit rlhf-ppo``: PPO for language models from the command line, in the style of ``ppokit grpo``.

Same options as ``ppokit grpo`` plus ``--reward-model DIR``; the same precedence, lowest first:
RLHFPPOConfig defaults < the built-in task's PPO preset (only when ppokit builds the tiny model) <
``--config FILE`` < the flags < ``--set key=value``. Nothing heavy is imported until the command runs.
The run itself (warm start, training, resume, the JSON summary) is the GRPO verb's, with
``RLHFPPOTrainer`` and the reward model added to the inputs here.
"""

from __future__ import annotations

import argparse
from typing import Any

from ppokit.errors import ConfigError
from ppokit.llm.cli import add_lm_options, config_from_flags, run_command


def register_rlhf_ppo(sub: Any) -> None:
    """Add the ``rlhf-ppo`` subcommand to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "rlhf-ppo",
        help="PPO with a value head and a KL penalty for a causal LM (RLHF; default: built-in addition).",
        description="PPO for language models: value head, per-token KL-penalised rewards, token-level "
        "GAE. With no arguments: build a tiny transformer and character tokenizer, warm-start it "
        "briefly, run PPO on multi-digit addition, print one JSON line with accuracy before/after.",
    )
    add_lm_options(p, "rlhf_ppo", "PPO steps", reward_model=True)
    p.set_defaults(func=rlhf_ppo_command)


def resolve_rlhf_config(args: argparse.Namespace) -> Any:
    """The RLHFPPOConfig the flags describe; prompts of one's own need something to score them."""
    from ppokit.llm.rlhf_config import RLHF_PRESETS, RLHFPPOConfig

    cfg = config_from_flags(args, RLHFPPOConfig, RLHF_PRESETS)
    if args.prompts and not (args.reward or cfg.reward_model):
        raise ConfigError("--prompts needs a --reward module:function or a --reward-model DIR")
    return cfg


def _inputs(cfg: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Prompts, reward functions (plus the reward model), held-out rows and accuracy function."""
    from ppokit.llm.runner import read_inputs as grpo_inputs
    from ppokit.llm.value_head import RewardModel

    if not cfg.reward_model:
        return grpo_inputs(cfg, sources)
    # With a reward model, the task's own functions are not used: the model (and any --reward
    # functions) score the completions.
    reward_model = RewardModel(cfg.reward_model, cfg.device)
    if sources.get("reward"):
        inputs = grpo_inputs(cfg.replace(reward_weights=None), sources)
        inputs["rewards"] = [*inputs["rewards"], reward_model]
    else:
        inputs = grpo_inputs(cfg.replace(reward_weights=None), {**sources, "reward": []})
        inputs["rewards"] = [reward_model]
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(inputs["rewards"]):
        raise ConfigError(
            f"reward_weights={cfg.reward_weights!r} is not allowed; give one weight per reward "
            f"({len(inputs['rewards'])}: the --reward functions, then the reward model)"
        )
    return inputs


def rlhf_ppo_command(args: argparse.Namespace) -> int:
    """``ppokit rlhf-ppo``: ``run_command`` with ``RLHFPPOTrainer`` and the reward model among the inputs."""
    from ppokit.llm.rlhf_ppo import RLHFPPOTrainer

    return run_command(args, RLHFPPOTrainer, resolve_rlhf_config, _inputs)
