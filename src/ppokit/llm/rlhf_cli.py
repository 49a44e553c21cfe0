"""``ppokit rlhf-ppo``: PPO for language models from the command line, in the style of ``ppokit grpo``.

Same options as ``ppokit grpo`` plus ``--reward-model DIR``; the same precedence, lowest first:
RLHFPPOConfig defaults < the built-in task's PPO preset (only when ppokit builds the tiny model) <
``--config FILE`` < the flags < ``--set key=value``. Nothing heavy is imported until the command runs.
The run itself (inputs, warm start, training, the JSON summary) is ``run_rlhf_ppo`` below; it reuses
the GRPO runner's pieces where they do not depend on the algorithm.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ppokit.config import apply_overrides
from ppokit.errors import ConfigError

SOURCES = "sources.json"


def register_rlhf_ppo(sub: Any) -> None:
    """Add the ``rlhf-ppo`` subcommand to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "rlhf-ppo",
        help="PPO with a value head and a KL penalty for a causal LM (RLHF; default: built-in addition).",
        description="PPO for language models: value head, per-token KL-penalised rewards, token-level "
        "GAE. With no arguments: build a tiny transformer and character tokenizer, warm-start it "
        "briefly, run PPO on multi-digit addition, print one JSON line with accuracy before/after.",
    )
    p.add_argument(
        "--task", metavar="NAME", help="Built-in task for prompts, rewards and accuracy (default: addition)."
    )
    p.add_argument(
        "--model", metavar="DIR", help="Local directory of an HF causal LM (save_pretrained format)."
    )
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
        "--run-dir", metavar="DIR", help="Run directory (default runs/<task>-rlhf_ppo-<timestamp>)."
    )
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (keys as in docs/rlhf_ppo.md).")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config key (dotted for sections, e.g. generation.temperature=0.7); repeatable.",
    )
    p.add_argument("--max-steps", type=int, metavar="N", help="PPO steps (overrides max_steps).")
    p.add_argument("--seed", type=int, metavar="N", help="Random seed.")
    p.add_argument("--device", metavar="DEV", help="Torch device: cpu, cuda, cuda:N.")
    p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its newest complete checkpoint.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")
    p.set_defaults(func=rlhf_ppo_command)


def resolve_rlhf_config(args: argparse.Namespace) -> Any:
    """The RLHFPPOConfig the flags describe (see the precedence in the module docstring)."""
    import yaml

    from ppokit.llm.cli import _merge
    from ppokit.llm.rlhf_config import RLHF_PRESETS, RLHFPPOConfig
    from ppokit.llm.tasks import TASKS

    task = args.task or "addition"
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a built-in task; choose one of {sorted(TASKS)}")
    data: dict[str, Any] = {} if args.model else json.loads(json.dumps(RLHF_PRESETS.get(task, {})))
    if args.reward_model:  # the preset weighs the task's two functions, which a reward model replaces
        data.pop("reward_weights", None)
    if args.config:
        RLHFPPOConfig.load_yaml(args.config)  # a bad file fails here, naming the file and the key
        data = _merge(data, yaml.safe_load(Path(args.config).read_text()) or {})
    data["task"] = task
    flags = {
        "model": args.model,
        "reward_model": args.reward_model,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "device": args.device,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    return RLHFPPOConfig.from_dict(apply_overrides(data, args.overrides))  # --set last


def _inputs(cfg: Any, sources: dict[str, Any]) -> dict[str, Any]:
    """Prompts, reward functions (plus the reward model), held-out rows and accuracy function."""
    from ppokit.llm.runner import _inputs as grpo_inputs
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


def _model(cfg: Any, inputs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """The user's model, or the tiny one warm-started on the task (accuracy measured around it)."""
    from ppokit.llm.base import LMTrainer
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained
    from ppokit.llm.tasks import warm_start

    if cfg.model:
        model, tokenizer = load_pretrained(cfg.model, cfg.device)
        return model, tokenizer, {}
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.tiny_model, tokenizer, seed=cfg.seed).to(cfg.device)
    info: dict[str, Any] = {}
    ws = cfg.warm_start
    if ws.steps and inputs["accuracy"] is not None:
        probe = LMTrainer(
            model, tokenizer, inputs["rewards"], inputs["train"], cfg,
            eval_prompts=inputs["eval"], accuracy_fn=inputs["accuracy"], progress=False,
        )  # fmt: skip
        # .get: under torchrun only rank 0 holds held-out prompts (the others get no figure)
        info["warm_start_accuracy_before"] = probe.evaluate()[0].get("eval/accuracy")
        stats = warm_start(
            model, tokenizer, inputs["train"], ws.steps, ws.batch_size, ws.learning_rate, cfg.seed, cfg.device
        )
        info["warm_start_accuracy_after"] = probe.evaluate()[0].get("eval/accuracy")
        info["warm_start_seconds"] = round(stats["warm_start/seconds"], 2)
        info["warm_start_steps"] = ws.steps
    return model, tokenizer, info


def run_rlhf_ppo(
    cfg: Any, run_dir: str | Path, sources: dict[str, Any], progress: bool = True
) -> dict[str, Any]:
    """A fresh PPO run into ``run_dir``; returns the summary ``ppokit rlhf-ppo`` prints as JSON."""
    import torch

    from ppokit import distributed
    from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
    from ppokit.llm.runner import _finish
    from ppokit.seeding import seed_everything

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise ConfigError(
            f"--run-dir {str(run_dir)!r} already holds checkpoints; use --resume {run_dir} or a new dir"
        )
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    inputs = _inputs(cfg, sources)
    model, tokenizer, info = _model(cfg, inputs)
    if distributed.init(cfg.device).is_main:  # under torchrun only rank 0 writes the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SOURCES).write_text(json.dumps(sources))
    trainer = RLHFPPOTrainer(
        model, tokenizer, inputs["rewards"], inputs["train"], cfg, eval_prompts=inputs["eval"],
        accuracy_fn=inputs["accuracy"], run_dir=run_dir, progress=progress,
    )  # fmt: skip
    return _finish(cfg, trainer.train(), info, started)


def resume_rlhf_ppo(
    run_dir: str | Path, overrides: list[str], max_steps: int | None, progress: bool = True
) -> dict[str, Any]:
    """Continue ``run_dir`` from its newest complete checkpoint (config from the run, plus overrides)."""
    import torch

    from ppokit.llm.rlhf_config import RLHFPPOConfig
    from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
    from ppokit.llm.runner import _finish

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: no config.yaml there (not a run directory)")
    data = RLHFPPOConfig.load_yaml(run_dir / "config.yaml", overrides).to_dict()
    if max_steps is not None:
        data = apply_overrides(data, [f"max_steps={max_steps}"])
    cfg = RLHFPPOConfig.from_dict(data)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    sources = json.loads((run_dir / SOURCES).read_text()) if (run_dir / SOURCES).is_file() else {}
    inputs = _inputs(cfg, sources)
    trainer = RLHFPPOTrainer.resume(
        run_dir, inputs["rewards"], inputs["train"], cfg, eval_prompts=inputs["eval"],
        accuracy_fn=inputs["accuracy"], run_dir=run_dir, progress=progress,
    )  # fmt: skip
    resumed_from = trainer.step
    return _finish(cfg, trainer.train(), {"resumed_from_step": resumed_from}, started)


def rlhf_ppo_command(args: argparse.Namespace) -> int:
    """Run (or resume) PPO as the flags say; the last stdout line is one JSON object."""
    if args.resume:
        summary = resume_rlhf_ppo(args.resume, args.overrides, args.max_steps, progress=not args.no_progress)
    else:
        cfg = resolve_rlhf_config(args)
        name = "custom" if args.prompts else cfg.task
        run_dir = Path(args.run_dir or f"runs/{name}-rlhf_ppo-{time.strftime('%Y%m%d-%H%M%S')}")
        sources = {"prompts": args.prompts, "eval_prompts": args.eval_prompts, "reward": args.reward}
        if args.prompts and not (args.reward or cfg.reward_model):
            raise ConfigError("--prompts needs a --reward module:function or a --reward-model DIR")
        summary = run_rlhf_ppo(cfg, run_dir, sources, progress=not args.no_progress)
    from ppokit import distributed

    if distributed.info().is_main:  # under torchrun: one JSON line, from rank 0
        print(json.dumps(summary))
    distributed.shutdown()
    return 0
