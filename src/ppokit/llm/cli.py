"""``ppokit grpo``: GRPO from the command line. Imports nothing heavy at import time (transformers is
loaded inside the command), so ``ppokit --help`` stays fast and works without the ``llm`` extra.

Config precedence, lowest first: GRPOConfig defaults < the built-in task's preset (only when ppokit
builds the tiny model) < ``--config FILE`` < the flags (``--max-steps`` ...) < ``--set key=value``,
the same order as ``ppokit train``. ``ppokit rlhf-ppo`` (``rlhf_cli.py``) shares the options, the
config resolution and the run command defined here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppokit.cli import add_overrides_option
from ppokit.config import apply_overrides
from ppokit.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``grpo`` subcommand to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "grpo",
        help="GRPO for a causal LM (default: the built-in addition task, CPU, no download).",
        description="Group Relative Policy Optimization. With no arguments: build a tiny "
        "transformer and character tokenizer, warm-start it briefly, run GRPO on "
        "multi-digit addition, print one JSON line with accuracy before/after.",
    )
    add_lm_options(p, "grpo", "GRPO steps")
    p.set_defaults(func=grpo_command)

    from ppokit.llm.rlhf_cli import register_rlhf_ppo  # PPO for RLHF: same options style

    register_rlhf_ppo(sub)


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
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts file {path!r} does not exist")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
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


def config_from_flags(args: argparse.Namespace, config_cls: Any, presets: dict[str, Any]) -> Any:
    """The ``config_cls`` the flags describe (see the precedence in the module docstring)."""
    import yaml

    from ppokit.llm.tasks import TASKS

    task = args.task or "addition"
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a built-in task; choose one of {sorted(TASKS)}")
    data: dict[str, Any] = {} if args.model else json.loads(json.dumps(presets.get(task, {})))  # a deep copy
    reward_model = getattr(args, "reward_model", None)  # only `ppokit rlhf-ppo` has --reward-model
    if reward_model:  # the preset weighs the task's two functions, which a reward model replaces
        data.pop("reward_weights", None)
    if args.config:
        config_cls.load_yaml(args.config)  # a bad file fails here, naming the file and the key
        data = _merge(data, yaml.safe_load(Path(args.config).read_text()) or {})
    data["task"] = task
    flags = {
        "model": args.model,
        "reward_model": reward_model,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "device": args.device,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    return config_cls.from_dict(apply_overrides(data, args.overrides))  # --set last, as in `ppokit train`


def resolve_config(args: argparse.Namespace) -> Any:
    """The GRPOConfig the flags describe; prompts of one's own need a reward function to score them."""
    from ppokit.llm.config import GRPOConfig
    from ppokit.llm.tasks import PRESETS

    cfg = config_from_flags(args, GRPOConfig, PRESETS)
    if args.prompts and not args.reward:
        raise ConfigError("--prompts needs at least one --reward module:function to score completions")
    return cfg


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_command(
    args: argparse.Namespace,
    trainer_cls: Any,
    resolve: Callable[[argparse.Namespace], Any],
    inputs_fn: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> int:
    """Run (or resume) ``trainer_cls`` as the flags say, with the config ``resolve(args)`` gives and
    the inputs ``inputs_fn`` reads (default: the runner's); the last stdout line is one JSON object."""
    from ppokit import distributed
    from ppokit.llm import runner

    inputs_fn = inputs_fn or runner.read_inputs
    progress = not args.no_progress
    if args.resume:
        summary = runner.resume_run(
            trainer_cls, args.resume, args.overrides, args.max_steps, progress, inputs_fn
        )
    else:
        cfg = resolve(args)
        name = "custom" if args.prompts else cfg.task
        run_dir = Path(args.run_dir or f"runs/{name}-{trainer_cls.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        sources = {"prompts": args.prompts, "eval_prompts": args.eval_prompts, "reward": args.reward}
        summary = runner.start_run(trainer_cls, cfg, run_dir, sources, progress, inputs_fn)
    if distributed.info().is_main:  # under torchrun: one JSON line, from rank 0
        print(json.dumps(summary))
    distributed.shutdown()
    return 0


def grpo_command(args: argparse.Namespace) -> int:
    """``ppokit grpo``: ``run_command`` with ``GRPOTrainer``."""
    from ppokit.llm.grpo import GRPOTrainer

    return run_command(args, GRPOTrainer, resolve_config)
