"""The Gymnasium verbs ``train``, ``eval`` and ``plot``: their parsers, what they do, and the run
directory; ``resume_ppo`` is what ``ppokit resume`` (``cli/resume.py``) does for a PPO run.

Config precedence (later wins): the preset ``<env>.yaml`` (rl/presets.py: ./configs, then the ones
shipped in ppokit/presets; CartPole-v1 when no --env and no --config) or an rl-zoo file (--zoo, or a
--config that is one: rl/zoo.py), the --config file, the explicit flags, then each ``--set key=value``.
Each layer is brought to canonical key names first (``ppokit.config.ALIASES``), so SB3's ``n_envs`` in
a file and ``--num-envs`` on the command line are one key, and the later one wins.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppokit.cli.options import add_train_options, add_trust_option
from ppokit.cli.runs import run_kind
from ppokit.cli.trust import check_run_dir
from ppokit.config import apply_overrides, read_yaml_mapping
from ppokit.errors import CheckpointError, ConfigError, EnvError, RunDirError
from ppokit.train.files import atomic_write
from ppokit.train.rundir import claim, config_text, default_run_dir, precheck
from ppokit.train.signals import StopOnSignal, exit_code

if TYPE_CHECKING:  # imported inside the commands: ppokit.rl loads torch, and --help must stay fast
    from ppokit.rl.config import PPOConfig
    from ppokit.rl.ppo import PPO

DEFAULT_ENV = "CartPole-v1"


def register(sub: Any) -> None:
    """Add ``train``, ``eval`` and ``plot`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "train",
        help="Train PPO on a Gymnasium environment (default: CartPole-v1).",
        description="Train PPO, then evaluate; prints the run directory and the result.",
    )
    add_train_options(p)
    p.set_defaults(func=train_command)

    p = sub.add_parser("eval", help="Evaluate a run's final model (or its newest complete checkpoint).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory written by `ppokit train`.")
    p.add_argument("--episodes", type=int, default=20, metavar="N", help="Episodes to run (default 20).")
    p.add_argument(
        "--stochastic", action="store_true", help="Sample actions instead of the deterministic mode."
    )
    p.add_argument("--json", action="store_true", help="Print exactly one JSON object with the result.")
    p.add_argument("--seed", type=int, default=10_000, metavar="N", help="Seed of the evaluation episodes.")
    p.add_argument(
        "--env", metavar="ID", help="Evaluate on this Gymnasium id instead (same spaces required)."
    )
    p.add_argument(
        "--video", metavar="DIR", help="Record each episode as an mp4 in DIR (gymnasium RecordVideo)."
    )
    p.add_argument("--render", action="store_true", help="Show the episodes in a window (needs a display).")
    add_trust_option(p)
    p.set_defaults(func=eval_command)

    p = sub.add_parser("plot", help="(Re)draw a run's plots from its CSV files.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory.")
    p.set_defaults(func=plot_command)


def resolve_config(args: argparse.Namespace) -> PPOConfig:
    """Merge preset, config file, flags and overrides into one validated ``PPOConfig``."""
    from ppokit.rl.config import PPOConfig
    from ppokit.rl.presets import find_preset
    from ppokit.rl.zoo import is_zoo_mapping, zoo_data

    data: dict[str, Any] = {}
    # `--env ""` is a mistake to report, not a request for the default (it trained CartPole: issue 16)
    env_id = args.env if args.env is not None else (None if args.config else DEFAULT_ENV)
    if env_id == "":
        raise ConfigError("--env '' is not allowed; give a Gymnasium environment id")
    config = read_yaml_mapping(Path(args.config)) if args.config else {}
    zoo = getattr(args, "zoo", None) or (args.config if is_zoo_mapping(config) else None)
    if zoo:  # an rl-zoo hyperparameter file replaces the preset (rl/zoo.py)
        data.update(zoo_data(config if zoo == args.config else read_yaml_mapping(Path(zoo)), args.env, zoo))
        print(f"zoo hyperparameters: {zoo} for {data['env_id']}")
        config, env_id = ({} if zoo == args.config else config), data["env_id"]
    elif env_id:  # a preset named after an env id (ALE/Breakout-v5) or its own (CartPole-v1-fast)
        preset = find_preset(env_id)
        if preset is not None:
            data.update(PPOConfig.canonicalize(read_yaml_mapping(preset)))
            print(f"preset: {preset}")
            env_id = data.setdefault("env_id", env_id)
        data["env_id"] = env_id
    if config:
        data.update(PPOConfig.canonicalize(config))
        if args.env is not None:
            data["env_id"] = env_id
    for flag, key in (
        ("total_timesteps", "total_timesteps"),
        ("seed", "seed"),
        ("num_envs", "num_envs"),
        ("device", "device"),
    ):
        if getattr(args, flag, None) is not None:
            data[key] = getattr(args, flag)
    if getattr(args, "gym_packages", None):
        data["gym_packages"] = list(data.get("gym_packages") or []) + list(args.gym_packages)
    data = apply_overrides(data, args.overrides, PPOConfig)
    if not data.get("env_wrappers"):  # e.g. MiniGrid's Text mission is dropped (envfind.DEFAULT_WRAPPERS)
        from ppokit.rl.envfind import default_wrappers

        data["env_wrappers"] = default_wrappers(str(data.get("env_id", "")))
    return PPOConfig.from_dict(data)


def run_name(cfg: PPOConfig) -> str:
    """``<env>-ppo``, one folder name also for ``ALE/Pong-v5`` and ``module:Id``."""
    return cfg.env_id.replace("/", "-").replace(":", "-") + "-ppo"


def new_run_dir(cfg: PPOConfig, given: str | None) -> Path:
    """``runs/<env>-ppo-<YYYYmmdd-HHMMSS>`` or the given directory, which must not hold a run (a
    first check; ``train/rundir.claim`` makes it exclusive)."""
    if given:
        return precheck(given, f"ppokit resume {given}")
    return default_run_dir(run_name(cfg))


def _learn_until_done_or_stopped(model: PPO, args: argparse.Namespace, total: int) -> int | None:
    """Learn; on a stop request write a checkpoint and return the exit code (None: finished)."""
    from ppokit.train.checkpoint import latest_checkpoint

    with StopOnSignal(model):
        try:
            # ``total`` counts the whole run: a resumed run trains what is left of it
            more = max(0, total - model.num_timesteps)
            model.learn(
                more, progress_bar=model.dist.is_main and not args.no_progress, reset_num_timesteps=False
            )
        except KeyboardInterrupt as e:  # a second signal (StopNow), or Ctrl-C/KeyboardInterrupt in user code
            note = getattr(e, "checkpoint_note", None)
            if note is None:
                newest = latest_checkpoint(model.run_dir / "checkpoints") if model.run_dir else None
                note = f"newest complete checkpoint: {newest}"
            print(f"stopped at once at step {model.num_timesteps}; {note}")
            model.close()
            return exit_code(e)  # 130 for SIGINT, 143 for SIGTERM (it was 130 for both: issue 34)
        except BaseException:
            model.close()  # environment workers must not outlive a failed run
            raise
    if model.stop_requested is None:
        return None
    ckpt = model.checkpoint()
    print(
        f"interrupted by {signal.Signals(model.stop_requested).name} at step {model.num_timesteps}; "
        f"checkpoint {ckpt}; continue with `ppokit resume {model.run_dir}`"
    )
    model.close()
    return 128 + int(model.stop_requested)


def _train_and_finish(model: PPO, args: argparse.Namespace, total: int) -> int:
    """Learn with checkpoint-on-interrupt, then save, plot and evaluate; print the outcome."""
    main = model.dist.is_main
    stopped = _learn_until_done_or_stopped(model, args, total)
    if stopped is not None:
        return stopped
    if not main:  # with torchrun, only rank 0 writes the model, plots and evaluation
        model.close()
        return 0
    model.checkpoint()
    model.save(model.run_dir / "model")
    try:
        model.close()
        close_error = None
    except (Exception, SystemExit) as e:  # an env whose close() raises (or calls sys.exit()): the
        close_error = e  # finished run still gets its plots and eval, the error comes after (issue 34)
    from ppokit.plotting import plot_rl_run  # matplotlib costs ~0.4-0.8 s to import: only when plotting

    plot_rl_run(model.run_dir)
    print(f"run directory: {model.run_dir}")
    if not args.no_eval:
        result = model.evaluate(model.config.eval_episodes)
        atomic_write(model.run_dir / "eval.json", json.dumps(result, indent=1))
        print(
            f"evaluation ({result['episodes']} episodes, deterministic): mean return "
            f"{result['mean_return']:.2f} +- {result['std_return']:.2f}"
        )
    if close_error is not None:
        raise EnvError(
            f"the run finished (model, plots and evaluation are in {model.run_dir}), but closing its "
            f"environments raised {type(close_error).__name__}: {close_error}"
        ) from None
    return 0


def train_command(args: argparse.Namespace) -> int:
    """``ppokit train``: build and check everything first (environments, policy), then claim the
    run directory (``train/rundir.py``), so a failed start leaves nothing at ``--run-dir``."""
    from ppokit import distributed
    from ppokit.rl.ppo import PPO

    cfg = resolve_config(args)
    if args.run_dir:
        new_run_dir(cfg, args.run_dir)  # refused at once, before the environments are built
    dist = distributed.init(cfg.device)
    model = PPO(cfg.env_id, cfg)
    try:
        if dist.is_main:  # only rank 0 owns the run directory
            given = Path(args.run_dir) if args.run_dir else None
            claimed = claim(given, run_name(cfg), config_text(cfg), f"ppokit resume {args.run_dir}")
            try:
                model.set_run_dir(claimed.path, lock=claimed.lock)
            except BaseException:
                claimed.abandon()
                raise
    except BaseException:
        model.close()
        distributed.shutdown()
        raise
    try:
        return _train_and_finish(model, args, cfg.total_timesteps)
    finally:
        distributed.shutdown()


def resume_ppo(args: argparse.Namespace) -> int:
    """``ppokit resume RUN_DIR`` for a PPO run: continue from the newest complete checkpoint (a run
    that crashed before its first checkpoint starts again from its ``config.yaml``)."""
    from ppokit.rl.ppo import PPO
    from ppokit.train.checkpoint import latest_checkpoint

    if args.max_steps is not None or args.overrides:
        raise ConfigError(
            f"{args.run_dir!r} is a PPO run: --max-steps and --set are for GRPO and RLHF-PPO runs "
            "(use --total-timesteps N)"
        )
    if args.total_timesteps is not None and args.total_timesteps < 1:
        raise ConfigError(f"--total-timesteps={args.total_timesteps} is not allowed; must be >= 1")
    run_dir = Path(args.run_dir)
    has_checkpoint = latest_checkpoint(run_dir / "checkpoints") is not None
    try:
        edited = _edited_config(run_dir)  # an invalid config.yaml is refused here, naming the key
    except ConfigError as e:
        if has_checkpoint:
            raise
        raise CheckpointError(
            f"{str(run_dir)!r} is no run directory with a complete checkpoint to resume from (it stopped "
            f"before its first one), and its config cannot start it again: {e}"
        ) from None
    if edited is not None and not has_checkpoint:
        return _restart(edited, run_dir, args)
    model = PPO.resume(run_dir)  # the config comes with the checkpoint
    if edited is not None:
        differ = config_differences(model.config.to_dict(), edited.to_dict())
        if differ:
            model.close()
            raise ConfigError(
                f"{str(run_dir / 'config.yaml')!r} was edited after the run started ({differ}); a PPO run "
                "resumes with the config it was trained with: undo the edit (or start a new run with "
                "--config; --total-timesteps N changes the budget)"
            )
    info = model.resume_info
    how = (
        "environment state restored exactly"
        if info["env_state_restored"]
        else f"environments reset, their state could not be saved: {info['env_state_missing']}"
    )
    print(f"resuming {run_dir} from {Path(info['checkpoint']).name} (step {model.num_timesteps}; {how})")
    return _train_and_finish(model, args, args.total_timesteps or model.target_timesteps)


def _edited_config(run_dir: Path) -> PPOConfig | None:
    """The run's ``config.yaml`` validated (ConfigError naming the file and key), or None without one."""
    from ppokit.rl.config import PPOConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return PPOConfig.load_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"{str(path)!r} is not a valid config (edited?): {e}") from None


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """``"key: old -> new, ..."`` for the keys whose values differ (dotted for sections), shortened."""
    from ppokit.config import short

    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = config_differences(a, b, f"{prefix}{key}.")
            out += [inner] if inner else []
        elif a != b:
            out.append(f"{prefix}{key}: {short(a)} -> {short(b)}")
    return ", ".join(out[:6]) + (f" and {len(out) - 6} more" if len(out) > 6 else "")


def _restart(cfg: PPOConfig, run_dir: Path, args: argparse.Namespace) -> int:
    """A run with a config but no checkpoint yet (it crashed or was killed before its first one):
    train it from the start, as ``ppokit train --config RUN_DIR/config.yaml`` would have."""
    from ppokit.rl.ppo import PPO
    from ppokit.train.rundir import RunDirLock

    if (run_dir / "model").exists():
        raise CheckpointError(f"{str(run_dir)!r} has a model/ but no checkpoint to resume from")
    if args.total_timesteps is not None:
        cfg = cfg.replace(total_timesteps=args.total_timesteps)
    model = PPO(cfg.env_id, cfg)
    try:
        lock = RunDirLock(run_dir)
    except BaseException:
        model.close()
        raise
    model.set_run_dir(run_dir, lock=lock)  # a fresh metrics.csv: the lost attempt's rows go
    print(f"{run_dir} holds no checkpoint yet: training it from the start with its config.yaml")
    return _train_and_finish(model, args, cfg.total_timesteps)


def eval_command(args: argparse.Namespace) -> int:
    """``ppokit eval RUN_DIR``."""
    from ppokit.rl.ppo import PPO

    if args.episodes < 1:
        raise ConfigError(f"--episodes={args.episodes} is not allowed; must be >= 1")
    kind = run_kind(args.run_dir) if Path(args.run_dir).is_dir() else "ppo"
    if kind != "ppo":  # it said `kind=None` (issue 34)
        name = {"grpo": "GRPO", "rlhf_ppo": "RLHF-PPO"}.get(kind, kind)
        raise ConfigError(
            f"{args.run_dir!r} is a {name} run; `ppokit eval` evaluates Gymnasium PPO runs. A language-model "
            "run's held-out accuracy is eval/accuracy in its metrics.csv and summary, its completions are "
            f"in samples.md; continue it with `ppokit resume {args.run_dir}`"
        )
    check_run_dir(args.run_dir, args.trust_run_dir, "eval")  # untrusted run directories (issue 34)
    from ppokit.rl.evaluation import evaluate_policy, last_training_return, stochastic_hint

    model = PPO.load(Path(args.run_dir), env=getattr(args, "env", None), tensorboard=False)
    run_dir = Path(args.run_dir)
    try:
        result = evaluate_policy(
            model, args.episodes, not args.stochastic, args.seed, video_dir=args.video, render=args.render
        )
        hint = stochastic_hint(model, result, last_training_return(run_dir)) if not args.env else None
    finally:
        model.close()
    if hint is not None:
        result["hint"] = hint
    if (run_dir / "config.yaml").exists():
        try:
            # atomic, and a planted link is replaced, not written through (issue 34)
            atomic_write(run_dir / "eval.json", json.dumps(result, indent=1))
        except RunDirError as e:
            print(f"ppokit eval: note: eval.json not written: {e}", file=sys.stderr)
        except OSError as e:  # a read-only run: the result is still worth printing (issue 16)
            print(f"ppokit eval: note: eval.json not written: {e.strerror or e}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(
            f"{result['env_id']}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
            f"over {result['episodes']} episodes ({mode})"
        )
        if "score" in result:  # Atari: say what the number is (rl/evaluation.py)
            print(f"score counted over the {result['score']}")
        if args.video:
            print(f"videos: {args.video}")
    if hint is not None:  # stderr: --json keeps exactly one JSON object on stdout
        print(f"ppokit eval: note: {hint['message']}", file=sys.stderr)
    return 0


def plot_command(args: argparse.Namespace) -> int:
    """``ppokit plot RUN_DIR``."""
    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise CheckpointError(f"{args.run_dir!r} has no metrics.csv to plot")
    from ppokit.plotting import plot_rl_run

    if run_kind(run_dir) == "ppo":
        plot = plot_rl_run
    else:
        from ppokit.llm.report import plot_llm_run as plot
    for path in plot(run_dir):  # a GRPO run drew an empty PPO plot (issue 34)
        print(path)
    return 0
