"""The command-line options more than one verb takes: ``--set`` overrides, the training options of
``ppokit train``, and the options of the language-model verbs ``grpo`` and ``rlhf-ppo``."""

from __future__ import annotations

import argparse


def add_overrides_option(p: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.overrides``; ``example`` shows a dotted key."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"Override a config key (dotted for sections, e.g. {example}); repeatable.",
    )


def add_progress_options(p: argparse.ArgumentParser, evaluation: bool = True) -> None:
    """``--no-eval`` (when ``evaluation``) and ``--no-progress``."""
    if evaluation:
        p.add_argument("--no-eval", action="store_true", help="Skip the final evaluation.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The options of ``ppokit train`` (Gymnasium PPO)."""
    p.add_argument(
        "--env",
        metavar="ID",
        help="Gymnasium id, or module:Id (imports module first); uses configs/<ID>.yaml when it exists.",
    )
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML config file (keys as in README's config table)."
    )
    p.add_argument(
        "--gym-packages",
        nargs="+",
        metavar="MODULE",
        help="Python modules to import before looking the env id up (they register their envs).",
    )
    p.add_argument("--total-timesteps", type=int, metavar="N", help="Environment steps to train for.")
    p.add_argument("--seed", type=int, metavar="N", help="Random seed.")
    p.add_argument("--num-envs", type=int, metavar="N", help="Environments stepped in parallel.")
    p.add_argument("--device", metavar="DEV", help="Torch device: cpu, cuda, cuda:N.")
    p.add_argument("--run-dir", metavar="DIR", help="Run directory (default runs/<env>-ppo-<timestamp>).")
    add_overrides_option(p, "network.hidden_sizes=[64,64]")
    add_progress_options(p)


def add_lm_options(p: argparse.ArgumentParser, algo: str, steps: str, reward_model: bool = False) -> None:
    """The options of ``ppokit grpo`` and ``ppokit rlhf-ppo``: ``algo`` names the run directory and the
    docs page, ``steps`` what ``--max-steps`` counts; ``reward_model`` adds ``--reward-model DIR``."""
    p.add_argument(
        "--task", metavar="NAME", help="Built-in task for prompts, rewards and accuracy (default: addition)."
    )
    p.add_argument(
        "--model", metavar="DIR", help="Local directory of an HF causal LM (save_pretrained format)."
    )
    if reward_model:
        p.add_argument(
            "--reward-model",
            metavar="DIR",
            help="Local directory of an HF sequence-classification reward model (num_labels=1).",
        )
    p.add_argument(
        "--prompts", metavar="FILE.jsonl", help="Prompts, one JSON object per line with a 'prompt' key."
    )
    p.add_argument(
        "--eval-prompts", metavar="FILE.jsonl", help="Held-out prompts for the greedy eval reward."
    )
    p.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="MODULE:FN",
        help="Reward function module:function or file.py:function; repeatable.",
    )
    p.add_argument(
        "--run-dir", metavar="DIR", help=f"Run directory (default runs/<task>-{algo}-<timestamp>)."
    )
    p.add_argument("--config", metavar="FILE.yaml", help=f"YAML config file (keys as in docs/{algo}.md).")
    add_overrides_option(p, "generation.temperature=0.7")
    p.add_argument("--max-steps", type=int, metavar="N", help=f"{steps} (overrides max_steps).")
    p.add_argument("--seed", type=int, metavar="N", help="Random seed.")
    p.add_argument("--device", metavar="DEV", help="Torch device: cpu, cuda, cuda:N.")
    p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its newest complete checkpoint.")
    add_progress_options(p, evaluation=False)
