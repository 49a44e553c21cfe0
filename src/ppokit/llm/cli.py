"""``ppokit grpo``: GRPO from the command line. Imports nothing heavy at import time (transformers is
loaded inside the command), so ``ppokit --help`` stays fast and works without the ``llm`` extra.

Config precedence, lowest first: GRPOConfig defaults < the built-in task's preset (only when ppokit
builds the tiny model) < ``--config FILE`` < the flags (``--max-steps`` ...) < ``--set key=value``,
the same order as ``ppokit train``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--task", metavar="NAME", help="Built-in task for prompts, rewards and accuracy (default: addition)."
    )
    p.add_argument(
        "--model", metavar="DIR", help="Local directory of an HF causal LM (save_pretrained format)."
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
    p.add_argument("--run-dir", metavar="DIR", help="Run directory (default runs/<task>-grpo-<timestamp>).")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (keys as in docs/grpo.md).")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config key (dotted for sections, e.g. generation.temperature=0.7); repeatable.",
    )
    p.add_argument("--max-steps", type=int, metavar="N", help="GRPO steps (overrides max_steps).")
    p.add_argument("--seed", type=int, metavar="N", help="Random seed.")
    p.add_argument("--device", metavar="DEV", help="Torch device: cpu, cuda, cuda:N.")
    p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its newest complete checkpoint.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")
    p.set_defaults(func=grpo_command)

    from ppokit.llm.rlhf_cli import register_rlhf_ppo  # PPO for RLHF: same options style

    register_rlhf_ppo(sub)


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


def resolve_config(args: argparse.Namespace) -> Any:
    """The GRPOConfig the flags describe (see the precedence in the module docstring)."""
    import yaml

    from ppokit.llm.config import GRPOConfig
    from ppokit.llm.tasks import PRESETS, TASKS

    data: dict[str, Any] = {}
    task = args.task or "addition"
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a built-in task; choose one of {sorted(TASKS)}")
    if not args.model:
        data = json.loads(json.dumps(PRESETS[task]))  # a deep copy
    if args.config:
        GRPOConfig.load_yaml(args.config)  # a bad file fails here, naming the file and the key
        data = _merge(data, yaml.safe_load(Path(args.config).read_text()) or {})
    data["task"] = task
    for key, value in (
        ("model", args.model),
        ("max_steps", args.max_steps),
        ("seed", args.seed),
        ("device", args.device),
    ):
        if value is not None:
            data[key] = value
    data = apply_overrides(data, args.overrides)  # last, as in `ppokit train`
    return GRPOConfig.from_dict(data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def grpo_command(args: argparse.Namespace) -> int:
    """Run (or resume) GRPO as the flags say; the last stdout line is one JSON object."""
    from ppokit.llm.runner import resume_grpo, run_grpo

    if args.resume:
        summary = resume_grpo(args.resume, args.overrides, args.max_steps, progress=not args.no_progress)
    else:
        cfg = resolve_config(args)
        run_dir = Path(
            args.run_dir
            or f"runs/{cfg.task if not args.prompts else 'custom'}-grpo-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        sources = {"prompts": args.prompts, "eval_prompts": args.eval_prompts, "reward": args.reward}
        if args.prompts and not args.reward:
            raise ConfigError("--prompts needs at least one --reward module:function to score completions")
        summary = run_grpo(cfg, run_dir, sources, progress=not args.no_progress)
    from ppokit import distributed

    if distributed.info().is_main:  # under torchrun: one JSON line, from rank 0
        print(json.dumps(summary))
    distributed.shutdown()
    return 0
