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


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """``--trust-run-dir``: import the code a run directory names even when it is another user's or
    ships that code itself (``cli/trust.py``)."""
    p.add_argument(
        "--trust-run-dir",
        action="store_true",
        help="Import the modules the run names even if the directory is another user's or ships them.",
    )


def add_progress_options(p: argparse.ArgumentParser, evaluation: bool = True) -> None:
    """``--no-eval`` (when ``evaluation``) and ``--no-progress``."""
    if evaluation:
        p.add_argument("--no-eval", action="store_true", help="Skip the final evaluation.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")


# An option as a row, ``(flag, metavar, help[, other add_argument keywords])``: the verbs list their
# options in order, and the ones several verbs take are one row each, so they read the same everywhere.
INT = {"type": int}
SEED = ("--seed", "N", "Random seed.", INT)
DEVICE = (
    "--device",
    "DEV",
    "Torch device: auto (the rank's own GPU when CUDA is present, else cpu), cpu, cuda, cuda:N.",
)


def add_rows(p: argparse.ArgumentParser, *rows: tuple) -> None:
    """``add_argument`` for each row, in order."""
    for flag, metavar, help_, *keywords in rows:
        p.add_argument(flag, metavar=metavar, help=help_, **(keywords[0] if keywords else {}))


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The options of ``ppokit train`` (Gymnasium PPO)."""
    add_rows(
        p,
        (
            "--env",
            "ID",
            "Gymnasium id, or module:Id (imports module first), or a preset name; uses its preset "
            "(`ppokit presets` lists them).",
        ),
        ("--config", "FILE.yaml", "YAML config file (keys as in README's config table)."),
        ("--zoo", "FILE.yml", "rl-baselines3-zoo hyperparameter file: train its entry for --env."),
        (
            "--gym-packages",
            "MODULE",
            "Python modules to import before looking the env id up (they register their envs).",
            {"nargs": "+"},
        ),
        ("--total-timesteps", "N", "Environment steps to train for.", INT),
        SEED,
        ("--num-envs", "N", "Environments stepped in parallel.", INT),
        DEVICE,
        ("--run-dir", "DIR", "Run directory (default runs/<env>-ppo-<timestamp>)."),
    )
    add_overrides_option(p, "network.hidden_sizes=[64,64]")
    add_progress_options(p)


def add_lm_options(p: argparse.ArgumentParser, algo: str, steps: str, reward_model: bool = False) -> None:
    """The options of ``ppokit grpo`` and ``ppokit rlhf-ppo``: ``algo`` names the run directory and the
    docs page, ``steps`` what ``--max-steps`` counts; ``reward_model`` adds ``--reward-model DIR``."""
    add_rows(
        p,
        ("--task", "NAME", "Built-in task for prompts, rewards and accuracy (default: addition)."),
        ("--model", "DIR", "Local directory of an HF causal LM (save_pretrained format)."),
    )
    if reward_model:
        add_rows(
            p,
            (
                "--reward-model",
                "DIR",
                "Local directory of an HF sequence-classification reward model (num_labels=1).",
            ),
        )
    add_rows(
        p,
        (
            "--prompts",
            "FILE.jsonl",
            "Prompts: JSONL (one object per line with a 'prompt' key), a JSON list or Parquet.",
        ),
        ("--eval-prompts", "FILE.jsonl", "Held-out prompts for the greedy eval reward."),
        (
            "--reward",
            "MODULE:FN",
            "Reward function module:function or file.py:function; repeatable.",
            {"action": "append", "default": []},
        ),
        ("--run-dir", "DIR", f"Run directory (default runs/<task>-{algo}-<timestamp>)."),
        ("--config", "FILE.yaml", f"YAML config file (keys as in docs/{algo}.md)."),
    )
    add_overrides_option(p, "generation.temperature=0.7")
    add_rows(
        p,
        ("--max-steps", "N", f"{steps} (overrides max_steps).", INT),
        SEED,
        DEVICE,
        ("--resume", "RUN_DIR", "Continue a run from its newest complete checkpoint."),
    )
    add_trust_option(p)
    add_progress_options(p, evaluation=False)
