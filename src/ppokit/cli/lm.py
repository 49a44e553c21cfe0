"""The language-model verbs ``ppokit grpo`` and ``ppokit rlhf-ppo``: their parsers, the config the
flags describe, and the run (build or load the model, warm start the built-in tiny one, train or
resume, print one JSON summary). Nothing heavy is imported until a command runs, so ``ppokit --help``
stays fast and works without the ``llm`` extra.

Config precedence, lowest first: the config class's defaults < the built-in task's preset (only when
ppokit builds the tiny model) < ``--config FILE`` < the flags (``--max-steps`` ...) < ``--set
key=value``, the same order as ``ppokit train``. Each layer is brought to canonical key names first
(``ppokit.config.ALIASES``), so TRL's ``beta`` in a file overrides the preset's ``kl_coef``.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.cli.options import add_lm_options
from ppokit.cli.trust import check_run_dir
from ppokit.config import apply_overrides, read_yaml_mapping
from ppokit.errors import ConfigError
from ppokit.train.files import atomic_write
from ppokit.train.rundir import claim, config_text, precheck
from ppokit.train.signals import StopOnSignal

if TYPE_CHECKING:  # imported inside the commands: ppokit.llm loads torch, and --help must stay fast
    from ppokit.llm.trainer import LMTrainer

SOURCES = "sources.json"  # the run's prompts file and reward specs, for --resume


def register(sub: Any) -> None:
    """Add ``grpo`` and ``rlhf-ppo`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "grpo",
        help="GRPO for a causal LM (default: the built-in addition task, CPU, no download).",
        description="Group Relative Policy Optimization. With no arguments: build a tiny "
        "transformer and character tokenizer, warm-start it briefly, run GRPO on "
        "multi-digit addition, print one JSON line with accuracy before/after.",
    )
    add_lm_options(p, "grpo", "GRPO steps")
    p.set_defaults(func=grpo_command)

    p = sub.add_parser(
        "rlhf-ppo",
        help="PPO with a value head and a KL penalty for a causal LM (RLHF; default: built-in addition).",
        description="PPO for language models: value head, per-token KL-penalised rewards, token-level "
        "GAE. With no arguments: build a tiny transformer and character tokenizer, warm-start it "
        "briefly, run PPO on multi-digit addition, print one JSON line with accuracy before/after.",
    )
    add_lm_options(p, "rlhf_ppo", "PPO steps", reward_model=True)
    p.set_defaults(func=rlhf_ppo_command)


def grpo_command(args: argparse.Namespace) -> int:
    """``ppokit grpo``: ``run_command`` with ``GRPOTrainer``."""
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPO_PRESETS

    return run_command(args, GRPOTrainer, GRPO_PRESETS)


def rlhf_ppo_command(args: argparse.Namespace) -> int:
    """``ppokit rlhf-ppo``: ``run_command`` with ``RLHFPPOTrainer``."""
    from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
    from ppokit.llm.rlhf_ppo_config import RLHF_PRESETS

    return run_command(args, RLHFPPOTrainer, RLHF_PRESETS)


def config_from_flags(args: argparse.Namespace, config_cls: Any, presets: dict[str, Any]) -> Any:
    """The ``config_cls`` the flags describe (see the precedence in the module docstring); prompts of
    one's own need something to score them."""
    from ppokit.llm.tasks import TASKS

    # a directory that is no model fails on loading, naming what is missing; a real one needs prompts
    if args.model and (Path(args.model) / "config.json").is_file() and not (args.prompts or args.task):
        raise ConfigError(
            f"--model {args.model} without --prompts would train on the built-in addition task; give "
            "--prompts FILE.jsonl and a --reward, or --task NAME to mean a built-in task"
        )
    task = args.task or "addition"
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not a built-in task; choose one of {sorted(TASKS)}")
    data: dict[str, Any] = {} if args.model else json.loads(json.dumps(presets.get(task, {})))  # a deep copy
    reward_model = getattr(args, "reward_model", None)  # only `ppokit rlhf-ppo` has --reward-model
    if reward_model or args.reward:  # the preset weighs the task's two functions, which these replace
        data.pop("reward_weights", None)
    if args.config:
        config_cls.load_yaml(args.config)  # a bad file fails here, naming the file and the key
        data = _merge(data, config_cls.canonicalize(read_yaml_mapping(args.config)))
    data["task"] = task
    flags = {
        "model": args.model,
        "reward_model": reward_model,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "device": args.device,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    # --set last, as in `ppokit train`
    cfg = config_cls.from_dict(apply_overrides(data, args.overrides, config_cls))
    if args.prompts and not (args.reward or getattr(cfg, "reward_model", None)):
        if hasattr(cfg, "reward_model"):
            raise ConfigError("--prompts needs a --reward module:function or a --reward-model DIR")
        raise ConfigError("--prompts needs at least one --reward module:function to score completions")
    return cfg


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_command(args: argparse.Namespace, trainer_cls: type[LMTrainer], presets: dict[str, Any]) -> int:
    """Run (or with ``--resume``, continue) ``trainer_cls`` as the flags say; the last stdout line is
    one JSON object (from rank 0 under torchrun)."""
    progress = not args.no_progress
    if args.resume:  # the same as `ppokit resume RUN_DIR`
        check_run_dir(args.resume, args.trust_run_dir, args.command)  # untrusted run dirs (issue 34)
        summary = resume_run(trainer_cls, args.resume, args.overrides, args.max_steps, progress)
    else:
        if args.run_dir:  # refused at once, before the model is built and warm-started
            precheck(args.run_dir, f"ppokit resume {args.run_dir}")
        cfg = config_from_flags(args, trainer_cls.config_class(), presets)
        name = "custom" if args.prompts else cfg.task
        run_dir = cfg.run_dir_for(args.run_dir)  # --run-dir, output_dir, or None: runs/<name>-<algo>-<stamp>
        sources = {"prompts": args.prompts, "eval_prompts": args.eval_prompts, "reward": args.reward}
        summary = start_run(trainer_cls, cfg, run_dir, sources, progress, name=name)
    return _print_summary(summary)


def resume_lm(args: argparse.Namespace, algo: str) -> int:
    """``ppokit resume RUN_DIR`` for a GRPO (``algo="grpo"``) or RLHF-PPO (``"rlhf_ppo"``) run."""
    if args.total_timesteps is not None:
        raise ConfigError(f"{args.run_dir!r} is a {algo} run: use --max-steps N, not --total-timesteps")
    if algo == "grpo":
        from ppokit.llm.grpo import GRPOTrainer as trainer_cls
    elif algo == "rlhf_ppo":
        from ppokit.llm.rlhf_ppo import RLHFPPOTrainer as trainer_cls
    else:
        raise ConfigError(f"{args.run_dir!r}: unknown language-model algorithm {algo!r}")
    summary = resume_run(trainer_cls, args.run_dir, args.overrides, args.max_steps, not args.no_progress)
    return _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> int:
    """The verb's last stdout line: one JSON object (from rank 0 under torchrun)."""
    from ppokit import distributed

    if distributed.info().is_main:
        signum = summary.get("interrupted_by")
        if signum is not None:
            print(
                f"interrupted by {signal.Signals(signum).name} at step {summary['steps']}; checkpoint "
                f"{summary.get('checkpoint')}; continue with `ppokit resume {summary.get('run_dir')}`",
                file=sys.stderr,
            )
        print(json.dumps(summary))
    distributed.shutdown()
    return 128 + int(summary["interrupted_by"]) if summary.get("interrupted_by") else 0


def _train(trainer: LMTrainer) -> dict[str, Any]:
    """``trainer.train()`` with SIGINT/SIGTERM finishing the step and checkpointing (train/signals.py)."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread
        return trainer.train()
    with StopOnSignal(trainer, "step"):
        return trainer.train()


def _model(cfg: Any, inputs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Load the user's model, or build the tiny one and warm start it (measured before and after)."""
    from ppokit.distributed import resolve_device
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained
    from ppokit.llm.trainer import LMTrainer

    device = resolve_device(cfg.device)  # issue 31: auto (the default) is this rank's GPU, else the CPU
    if cfg.model:
        model, tokenizer = load_pretrained(cfg.model, device, cfg.torch_dtype)
        return model, tokenizer, {}
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.tiny_model, tokenizer, seed=cfg.seed).to(device)
    info: dict[str, Any] = {}
    if cfg.warm_start.steps and inputs["accuracy"] is not None:
        from ppokit.llm.tasks import warm_start

        # LMTrainer's greedy evaluation alone: the algorithm (and a reference copy) is not needed here,
        # nor sharding (the model is not trained yet: fully_shard would change it in place)
        args = _trainer_args(cfg, inputs, run_dir=None, progress=False)
        args["config"] = copy.deepcopy(cfg)
        args["config"].distributed.strategy = "ddp"
        probe = LMTrainer(model, tokenizer, **args)
        # under torchrun only rank 0 evaluates (the others get {}), hence .get
        info["warm_start_accuracy_before"] = probe.evaluate()[0].get("eval/accuracy")
        ws = cfg.warm_start
        stats = warm_start(
            model, tokenizer, inputs["train"], ws.steps, ws.batch_size, ws.learning_rate, cfg.seed, device
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
    run_dir: str | Path | None,
    sources: dict[str, Any],
    progress: bool = True,
    name: str | None = None,
) -> dict[str, Any]:
    """A fresh run of ``trainer_cls`` (an ``LMTrainer``) into ``run_dir`` (None: a new
    ``runs/<name>-<algo>-<timestamp>``); returns the summary the verb prints as JSON. ``sources``: the
    prompts file, held-out prompts file and reward specs. Everything is built and checked before the
    run directory is claimed (``train/rundir.py``), so a failed start leaves nothing there."""
    import torch

    from ppokit import distributed
    from ppokit.llm.inputs import read_inputs
    from ppokit.seeding import seed_everything

    started = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        precheck(run_dir, f"ppokit resume {run_dir}")
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise ConfigError(
                f"--run-dir {str(run_dir)!r} already holds checkpoints; use --resume {run_dir} or a new dir"
            )
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    inputs = read_inputs(cfg, sources)
    model, tokenizer, info = _model(cfg, inputs)
    # model_dir: a LoRA checkpoint names the base directory instead of copying it
    trainer = trainer_cls(model, tokenizer, model_dir=cfg.model, **_trainer_args(cfg, inputs, None, progress))
    if distributed.init(cfg.device).is_main:  # under torchrun only rank 0 writes the run directory
        default = f"{name or cfg.task}-{trainer_cls.algo}"
        claimed = claim(run_dir, default, config_text(cfg), f"ppokit resume {run_dir or 'RUN_DIR'}")
        try:
            atomic_write(claimed.path / SOURCES, json.dumps(sources))
        except BaseException:
            claimed.abandon()
            raise
        trainer.set_run_dir(claimed.path, lock=claimed.lock)  # the run loop holds the lock from here
    return _finish(cfg, _train(trainer), info, started)


def resume_run(
    trainer_cls: type[LMTrainer],
    run_dir: str | Path,
    overrides: list[str],
    max_steps: int | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Continue ``run_dir`` from its newest complete checkpoint (config from the run, plus overrides);
    a run killed before its first checkpoint starts again from its config.yaml."""
    import torch

    from ppokit.llm.checkpoint import list_lm_checkpoints
    from ppokit.llm.inputs import read_inputs
    from ppokit.train.rundir import RunDirLock

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {str(run_dir)!r}: no config.yaml there (not a run directory)")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps={max_steps} is not allowed; must be >= 1")
    config_cls = trainer_cls.config_class()
    try:
        written = config_cls.load_yaml(run_dir / "config.yaml")
        data = apply_overrides(written.to_dict(), overrides, config_cls)
    except ConfigError as e:
        raise ConfigError(f"{str(run_dir / 'config.yaml')!r} is not a valid config (edited?): {e}") from None
    checkpoints = list_lm_checkpoints(run_dir / "checkpoints", verify_hashes=False)
    if checkpoints:
        _refuse_edited_config(run_dir, config_cls, written, checkpoints[-1])
    if max_steps is not None:
        data = apply_overrides(data, [f"max_steps={max_steps}"])
    cfg = config_cls.from_dict(data)
    if overrides:  # explicit --set changes are allowed, and said (issue 34)
        from ppokit.cli.rl import config_differences

        changed = config_differences(written.to_dict(), config_cls.from_dict(data).to_dict())
        print(f"ppokit resume: --set changes the run's config: {changed or 'nothing'}", file=sys.stderr)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    sources = _read_sources(run_dir)
    inputs = read_inputs(cfg, sources)
    # killed before its first checkpoint (sizes only: resume below hashes the newest it uses)
    if not checkpoints:
        from ppokit.seeding import seed_everything

        seed_everything(cfg.seed)
        model, tokenizer, info = _model(cfg, inputs)
        args = _trainer_args(cfg, inputs, run_dir, progress)
        trainer = trainer_cls(model, tokenizer, model_dir=cfg.model, **args)
        trainer.set_run_dir(run_dir, lock=RunDirLock(run_dir))
        print(f"{run_dir} holds no checkpoint yet: training it from the start with its config.yaml")
        return _finish(cfg, _train(trainer), {**info, "restarted": True}, started)
    trainer = trainer_cls.resume(run_dir, **_trainer_args(cfg, inputs, run_dir, progress))
    resumed_from = trainer.step
    return _finish(cfg, _train(trainer), {"resumed_from_step": resumed_from}, started)


def _refuse_edited_config(run_dir: Path, config_cls: Any, written: Any, checkpoint: Path) -> None:
    """One rule for resume on both sides (issue 34; PPO's is in cli/rl.py): a config.yaml edited
    after the run started is refused naming the changed keys (an LM resume applied it silently:
    learning_rate 1e-6 -> 0.5). What ppokit itself rewrote (a resume's --set / --max-steps, recorded by
    ``rundir.write_config``) is no edit; a run without that record is compared with its checkpoint."""
    from ppokit.cli.rl import config_differences
    from ppokit.cli.runs import checkpoint_meta
    from ppokit.train.rundir import config_edited

    if config_edited(run_dir) is False:
        return
    trained = checkpoint_meta(checkpoint).get("config")
    if not isinstance(trained, dict):
        return
    try:
        before = config_cls.from_dict(trained).to_dict()
    except ConfigError:
        return  # a checkpoint of another version's config: its own resume path says what is wrong
    differ = config_differences(before, written.to_dict())
    if differ:
        raise ConfigError(
            f"{str(run_dir / 'config.yaml')!r} was edited after the run started ({differ}); a run resumes "
            "with the config it was trained with: undo the edit, or pass the change explicitly with "
            "`ppokit resume RUN_DIR --set KEY=VALUE`"
        )


def _read_sources(run_dir: Path) -> dict[str, Any]:
    """The run's ``sources.json`` (prompts file and reward specs), {} when there is none; a damaged
    one is a one-line error (it was a JSONDecodeError traceback: issue 34)."""
    path = run_dir / SOURCES
    if not path.is_file():
        return {}
    try:
        sources = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{str(path)!r} is damaged (not JSON: {e}); restore it or start a new run"
        ) from None
    if not isinstance(sources, dict) or not all(
        v is None or isinstance(v, (str, list)) for v in sources.values()
    ):
        raise ConfigError(
            f"{str(path)!r} is damaged: expected an object of prompts / eval_prompts / reward entries"
        )
    return sources


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
