"""What the CLI verbs ``train``, ``eval``, ``plot`` and ``resume`` do, and the run directory.

Config precedence (later wins): the preset ``configs/<env>.yaml`` (CartPole-v1 when no --env and no
--config), the --config file, the explicit flags, then each ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from ppokit.config import apply_overrides
from ppokit.errors import CheckpointError, ConfigError
from ppokit.plotting import plot_rl_run
from ppokit.rl.config import PPOConfig

DEFAULT_ENV = "CartPole-v1"


def preset_dirs() -> list[Path]:
    """Where presets are looked up: ./configs, then the configs/ folder of the source checkout."""
    return [Path.cwd() / "configs", Path(__file__).resolve().parents[3] / "configs"]


def find_preset(env_id: str) -> Path | None:
    """``configs/<env_id>.yaml`` if it exists."""
    for d in preset_dirs():
        if (d / f"{env_id}.yaml").is_file():
            return d / f"{env_id}.yaml"
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def resolve_config(args: argparse.Namespace) -> PPOConfig:
    """Merge preset, config file, flags and overrides into one validated ``PPOConfig``."""
    data: dict[str, Any] = {}
    env_id = args.env or (None if args.config else DEFAULT_ENV)
    if env_id:
        preset = find_preset(env_id)
        if preset is not None:
            data.update(_read_yaml(preset))
        data["env_id"] = env_id
    if args.config:
        data.update(_read_yaml(Path(args.config)))
        if args.env:
            data["env_id"] = args.env
    for flag, key in (
        ("total_timesteps", "total_timesteps"),
        ("seed", "seed"),
        ("num_envs", "num_envs"),
        ("device", "device"),
    ):
        if getattr(args, flag, None) is not None:
            data[key] = getattr(args, flag)
    return PPOConfig.from_dict(apply_overrides(data, args.overrides))


def new_run_dir(cfg: PPOConfig, given: str | None) -> Path:
    """``runs/<env>-ppo-<YYYYmmdd-HHMMSS>`` or the given directory, which must not hold a run."""
    if given:
        path = Path(given)
        if (path / "config.yaml").exists():
            raise ConfigError(
                f"run directory {given!r} already holds a run; use `ppokit resume {given}` "
                "or choose another --run-dir"
            )
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg.env_id}-ppo-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{cfg.env_id}-ppo-{stamp}-{n}"
    return path


def _sigterm_as_interrupt() -> None:
    """SIGTERM behaves like Ctrl-C: the run writes a checkpoint and exits cleanly."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _train_and_finish(model: Any, args: argparse.Namespace, total: int) -> int:
    """Learn with checkpoint-on-interrupt, then save, plot and evaluate; print the outcome."""
    from ppokit.rl import state

    _sigterm_as_interrupt()
    try:
        model.learn(total, progress_bar=not args.no_progress)
    except KeyboardInterrupt:
        ckpt = state.save_training_checkpoint(model)
        print(
            f"interrupted at step {model.num_timesteps}; checkpoint {ckpt}; continue with "
            f"`ppokit resume {model.run_dir}`"
        )
        model.close()
        return 130
    state.save_training_checkpoint(model)
    model.save(model.run_dir / "model")
    model.close()
    plot_rl_run(model.run_dir)
    print(f"run directory: {model.run_dir}")
    if not args.no_eval:
        result = model.evaluate(model.config.eval_episodes)
        (model.run_dir / "eval.json").write_text(json.dumps(result, indent=1))
        print(
            f"evaluation ({result['episodes']} episodes, deterministic): mean return "
            f"{result['mean_return']:.2f} +- {result['std_return']:.2f}"
        )
    return 0


def train_command(args: argparse.Namespace) -> int:
    """``ppokit train``."""
    from ppokit.rl.ppo import PPO

    cfg = resolve_config(args)
    run_dir = new_run_dir(cfg, args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save_yaml(run_dir / "config.yaml")
    model = PPO(cfg.env_id, cfg, run_dir=run_dir)
    return _train_and_finish(model, args, cfg.total_timesteps)


def resume_command(args: argparse.Namespace) -> int:
    """``ppokit resume RUN_DIR``: continue from the newest complete checkpoint."""
    from ppokit.checkpoint import latest_checkpoint, load_checkpoint
    from ppokit.rl import state
    from ppokit.rl.ppo import PPO

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{args.run_dir!r} is not a run directory (no config.yaml)")
    cfg = PPOConfig.load_yaml(run_dir / "config.yaml")
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise CheckpointError(f"{args.run_dir!r} has no complete checkpoint to resume from")
    tensors, meta = load_checkpoint(ckpt)
    model = PPO(cfg.env_id, cfg.replace(seed=cfg.seed + meta["num_timesteps"]))
    model.config = cfg
    state.restore(model, tensors, meta, ckpt)
    model.set_run_dir(run_dir, append=True)
    print(f"resuming {run_dir} from {ckpt.name} (step {model.num_timesteps})")
    return _train_and_finish(model, args, args.total_timesteps or cfg.total_timesteps)


def eval_command(args: argparse.Namespace) -> int:
    """``ppokit eval RUN_DIR``."""
    from ppokit.rl.ppo import PPO

    if args.episodes < 1:
        raise ConfigError(f"--episodes={args.episodes} is not allowed; must be >= 1")
    model = PPO.load(Path(args.run_dir), tensorboard=False)
    result = model.evaluate(args.episodes, deterministic=not args.stochastic, seed=args.seed)
    model.close()
    run_dir = Path(args.run_dir)
    if (run_dir / "config.yaml").exists():
        (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(
            f"{result['env_id']}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
            f"over {result['episodes']} episodes ({mode})"
        )
    return 0


def plot_command(args: argparse.Namespace) -> int:
    """``ppokit plot RUN_DIR``."""
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise CheckpointError(f"{args.run_dir!r} has no metrics.csv to plot")
    for path in plot_rl_run(run_dir):
        print(path)
    return 0
