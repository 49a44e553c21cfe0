"""Stable-Baselines3's spellings, accepted: ``PPO("MlpPolicy", env, **sb3_kwargs)``, ``policy_kwargs``,
``make_vec_env`` / ``VecNormalize`` as descriptions, ``evaluate_policy``, ``get_env`` / ``set_env``.

Everything here translates an SB3 call into ppokit's own config (``PPOConfig``) and env spec; nothing
else in ppokit depends on it, so the translation is one table to read (docs/migrating-from-sb3.md lists
every argument). What has no ppokit counterpart (gSDE, custom rollout buffers, ...) is refused by name
with the reason, never silently dropped. SB3's API as read from its documentation and source
(https://stable-baselines3.readthedocs.io/en/master/modules/ppo.html, ``stable_baselines3/ppo/ppo.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.errors import ConfigError
from ppokit.rl.policy import Policy

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

SB3_POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")

# SB3's PPO defaults where they differ from PPOConfig's (ppokit's own defaults favour 8 numpy-
# vectorised envs); a script written for SB3 gets SB3's numbers (``PPO.__init__`` defaults, SB3 2.x).
SB3_DEFAULTS: dict[str, Any] = {"num_envs": 1, "n_steps": 2048, "batch_size": 64}

# SB3 keyword -> ppokit config key (same meaning); SB3's other keywords are ppokit's names already.
RENAMED = {"clip_range_vf": "vf_clip_range", "n_envs": "num_envs"}

# SB3 2.x PPO's constructor arguments, every one of which docs/migrating-from-sb3.md maps or refuses
# (tests/test_sb3_compat.py checks the page names them all).
SB3_ARGUMENTS = (
    "policy env learning_rate n_steps batch_size n_epochs gamma gae_lambda clip_range clip_range_vf "
    "normalize_advantage ent_coef vf_coef max_grad_norm use_sde sde_sample_freq rollout_buffer_class "
    "rollout_buffer_kwargs target_kl stats_window_size tensorboard_log policy_kwargs verbose seed device "
    "_init_setup_model"
).split()

# Arguments SB3 has and ppokit cannot honour: name -> (the value that means "off" in SB3, why).
REFUSED: dict[str, tuple[Any, str]] = {
    "use_sde": (False, "ppokit has no generalized State-Dependent Exploration (gSDE)"),
    "sde_sample_freq": (-1, "ppokit has no generalized State-Dependent Exploration (gSDE)"),
    "rollout_buffer_class": (None, "ppokit's rollout buffer is fixed (rl/rollout.py)"),
    "rollout_buffer_kwargs": (None, "ppokit's rollout buffer is fixed (rl/rollout.py)"),
    "_init_setup_model": (True, "ppokit always builds the model in the constructor"),
}

# policy_kwargs entries with no ppokit counterpart unless left at SB3's default.
POLICY_REFUSED: dict[str, tuple[Any, str]] = {
    "full_std": (True, "it is a gSDE option and ppokit has no gSDE"),
    "use_expln": (False, "it is a gSDE option and ppokit has no gSDE"),
    "squash_output": (
        False,
        "it is a gSDE option; for tanh-squashed actions set network.action_bounds='tanh'",
    ),
    "share_features_extractor": (True, "ppokit's observation encoders are always shared by actor and critic"),
    "normalize_images": (True, "ppokit always scales uint8 images by 1/255"),
    "features_extractor_class": (None, "bring your own network as a ppokit.Policy: PPO(MyPolicy, env)"),
    "optimizer_class": (torch.optim.Adam, "ppokit trains with Adam (optimizer_kwargs: eps, betas)"),
}

ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.ELU: "elu"}


def _refuse(name: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} is not supported: {why} (docs/migrating-from-sb3.md)")


# -- make_vec_env / VecNormalize: descriptions, not running envs ------------------------------------------
@dataclasses.dataclass(frozen=True)
class VecEnvRecipe:
    """What ``make_vec_env(...)`` (optionally under ``VecNormalize``) describes: ``n_envs`` copies of
    ``env`` (an id or a factory), and the normalisation ppokit then does itself (saved with the model).

    It is a description, not a running env: ``PPO``, ``evaluate_policy``, ``EvalCallback`` and
    ``set_env`` accept it; the running vector env of a model is ``model.get_env()``."""

    env: Any
    n_envs: int = 1
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    seed: int | None = None
    normalize: dict | None = None  # PPOConfig keys from VecNormalize, None without it

    @property
    def num_envs(self) -> int:
        """SB3's ``VecEnv.num_envs``."""
        return self.n_envs


def make_vec_env(
    env_id: str | Callable[[], gym.Env],
    n_envs: int = 1,
    seed: int | None = None,
    env_kwargs: dict | None = None,
    **unsupported: Any,
) -> VecEnvRecipe:
    """SB3's ``make_vec_env``: ``n_envs`` copies of ``env_id`` (an id or a callable making a ``gym.Env``),
    as a ``VecEnvRecipe`` that ``PPO`` turns into its vector env. Other SB3 arguments (``wrapper_class``,
    ``vec_env_cls``, ``monitor_dir``, ...) are refused: use ``env_wrappers`` and ``vectorization``."""
    for name, value in unsupported.items():
        if value is not None:
            raise _refuse(
                f"make_vec_env({name})", value, "set env_wrappers / vectorization in the PPO config"
            )
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ConfigError(f"n_envs={n_envs!r} is not allowed; give a positive integer")
    return VecEnvRecipe(env_id, n_envs, dict(env_kwargs or {}), seed)


def VecNormalize(  # noqa: N802 (SB3's class name, so a script ports with its import line changed)
    venv: VecEnvRecipe,
    training: bool = True,
    norm_obs: bool = True,
    norm_reward: bool = True,
    clip_obs: float = 10.0,
    clip_reward: float = 10.0,
    gamma: float = 0.99,
    epsilon: float = 1e-8,
    norm_obs_keys: list[str] | None = None,
) -> VecEnvRecipe:
    """SB3's ``VecNormalize`` as ppokit's ``normalize_obs`` / ``normalize_reward`` (running statistics
    kept in the model and saved with it, so no separate ``vec_normalize.pkl``). ``gamma`` must equal the
    PPO's gamma (ppokit scales rewards with the PPO's own); ``training=False`` (an eval env) is the
    plain env, since ppokit's predict applies the model's statistics itself."""
    if not isinstance(venv, VecEnvRecipe):
        raise ConfigError(f"VecNormalize(venv={venv!r}) is not allowed; wrap ppokit.make_vec_env(...)")
    if norm_obs_keys is not None:
        raise _refuse("VecNormalize(norm_obs_keys)", norm_obs_keys, "ppokit normalises Box observations only")
    if epsilon != 1e-8:
        raise _refuse("VecNormalize(epsilon)", epsilon, "ppokit's normaliser uses SB3's default 1e-8")
    if not training:
        return venv
    norm = {"normalize_obs": bool(norm_obs), "normalize_reward": bool(norm_reward)}
    norm.update(obs_clip=float(clip_obs), reward_clip=float(clip_reward), _vecnorm_gamma=float(gamma))
    return dataclasses.replace(venv, normalize=norm)


# -- envs --------------------------------------------------------------------------------------------------
def instance_factory(env: gym.Env) -> Callable[[], gym.Env]:
    """A factory for an env *instance* (SB3 wraps one instance in a DummyVecEnv of 1): the first call
    returns the instance itself, later ones (evaluation envs, ``num_envs > 1``) a new copy, made from its
    spec when it was registered (``gym.make(env.spec)`` re-applies the recorded wrappers), else by
    ``copy.deepcopy``."""
    first = [env]

    def make() -> gym.Env:
        if first:
            return first.pop()
        if env.spec is not None and env.spec.entry_point:
            return gym.make(env.spec)
        try:
            return copy.deepcopy(env)
        except Exception as e:  # the env holds something uncopyable (a window, a socket, a handle)
            raise ConfigError(
                f"env={type(env.unwrapped).__name__} instance cannot be copied for a second env "
                f"({type(e).__name__}: {e}); pass a factory instead: PPO(policy, lambda: MyEnv())"
            ) from None

    make.__name__ = type(env.unwrapped).__name__
    return make


def env_and_settings(env: Any) -> tuple[Any, dict[str, Any]]:
    """``(ppokit env spec, config keys it implies)`` for any env an SB3 script passes: an id, a factory,
    a ``gym.Env`` instance, or a ``VecEnvRecipe``. A running vector env is refused with what to pass."""
    if isinstance(env, VecEnvRecipe):
        settings: dict[str, Any] = {"num_envs": env.n_envs, **(env.normalize or {})}
        if env.seed is not None:
            settings["seed"] = env.seed
        inner = env.env
        if env.env_kwargs and isinstance(inner, str):
            settings["env_kwargs"] = env.env_kwargs
        elif env.env_kwargs:  # SB3 calls a callable env_id with env_kwargs; so does the factory here
            inner = functools.partial(inner, **env.env_kwargs)
        inner, more = env_and_settings(inner)
        return inner, {**more, **settings}
    if isinstance(env, gym.Env):
        return instance_factory(env), {"num_envs": 1}
    if isinstance(env, gym.vector.VectorEnv) or hasattr(env, "step_async"):
        raise ConfigError(
            f"env={type(env).__name__} (a running vector env) is not supported; pass the env id (or a "
            "factory) and the number of copies: PPO('MlpPolicy', 'CartPole-v1', n_envs=8) or "
            "ppokit.make_vec_env('CartPole-v1', n_envs=8)"
        )
    return env, {}


# -- the constructor -----------------------------------------------------------------------------------
@dataclasses.dataclass
class SB3Options:
    """What the SB3 form sets beyond the config: printing and SB3's TensorBoard directory habit."""

    verbose: int = 0
    tensorboard_log: str | None = None
    stats_window_size: int = 100
    log_interval: int = 1


def is_sb3_policy(x: Any) -> bool:
    """Whether ``x`` is an SB3-style first argument: a policy name, a ``Policy`` class or instance."""
    if isinstance(x, str):
        return x in SB3_POLICIES
    return isinstance(x, Policy) or (isinstance(x, type) and issubclass(x, Policy))


def accept(
    model: PPO, env: Any, config: Any, run_dir: Any, policy: Any, overrides: dict[str, Any]
) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """``PPO.__init__``'s arguments in ppokit's form. ``PPO(policy, env, **sb3_kwargs)`` (the policy a
    name in ``SB3_POLICIES`` or a ``Policy`` class/instance, SB3's positional order) and
    ``PPO(policy="MlpPolicy", env=...)`` become ``(env spec, PPOConfig with SB3's defaults, None,
    policy, {})``. ppokit's own ``PPO(env, config, **overrides)`` keeps ppokit's defaults; SB3's
    spellings among its overrides (``verbose``, ``policy_kwargs``, a schedule, ``device="auto"``, ...)
    and an env instance are translated too. Sets ``model.sb3`` (``SB3Options``)."""
    model.sb3 = SB3Options()
    if isinstance(env, str) and env.endswith("Policy") and env not in SB3_POLICIES:  # not an env id
        raise ConfigError(
            f"policy={env!r} is not supported; use one of {list(SB3_POLICIES)} (sb3-contrib's "
            "MlpLstmPolicy / CnnLstmPolicy: network={'recurrent': 'lstm'})"
        )
    sb3_form = is_sb3_policy(env) or (isinstance(policy, str) and policy in SB3_POLICIES)
    if not sb3_form:
        if isinstance(policy, str):
            raise ConfigError(
                f"policy={policy!r} is not allowed; use one of {list(SB3_POLICIES)} or a Policy"
            )
        settings: dict[str, Any] = {}
        if isinstance(env, (gym.Env, VecEnvRecipe)):  # an instance: as SB3, one env (that instance)
            env, settings = env_and_settings(env)
        keys = sb3_keys(model, {**settings, **overrides})
        keys.pop("_vecnorm_gamma", None)
        if "network" in keys and config is not None:  # policy_kwargs refine the config's network
            base = config.get("network", {}) if isinstance(config, dict) else config.network
            base = base.to_dict() if hasattr(base, "to_dict") else dict(base)
            keys["network"] = {**base, **keys["network"]}
        return env, config, run_dir, policy, keys
    if is_sb3_policy(env):  # positional: PPO(policy, env, ...)
        policy, env = env, config
    elif config is not None:
        raise ConfigError("PPO(policy=..., env=..., config=...) mixes SB3's and ppokit's forms; pass one")
    if isinstance(run_dir, (int, float)) or callable(run_dir):  # SB3's third positional argument
        overrides = {"learning_rate": run_dir, **overrides}
        run_dir = None
    if env is None:
        raise ConfigError("env=None is not allowed; PPO(policy, env) needs an env id, instance or factory")
    spec, settings = env_and_settings(env)
    cfg = translate(model, {**settings, **overrides}, env)
    return spec, cfg, run_dir, (None if isinstance(policy, str) else policy), {}


def translate(model: PPO, kwargs: dict[str, Any], env: Any) -> Any:
    """A ``PPOConfig`` from SB3 keyword arguments (and any ppokit config keys given alongside), on
    SB3's defaults (``SB3_DEFAULTS``, ``device="auto"``)."""
    from ppokit.rl.config import PPOConfig

    out = {**SB3_DEFAULTS, **({"env_id": env} if isinstance(env, str) else {})}
    out["device"] = resolve_device("auto")
    keys = sb3_keys(model, kwargs)
    vecnorm_gamma = keys.pop("_vecnorm_gamma", None)
    out.update(keys)
    if "batch_size" not in keys and out["batch_size"] > out["n_steps"] * out["num_envs"]:
        out["batch_size"] = out["n_steps"] * out["num_envs"]  # SB3's 64 over a smaller rollout: all of it
    cfg = PPOConfig.from_dict(out)
    if vecnorm_gamma is not None and cfg.normalize_reward and vecnorm_gamma != cfg.gamma:
        raise ConfigError(
            f"VecNormalize(gamma={vecnorm_gamma}) is not allowed with gamma={cfg.gamma}: ppokit scales "
            "rewards with the PPO's own gamma; give both the same value"
        )
    return cfg


def sb3_keys(model: PPO, kwargs: dict[str, Any]) -> dict[str, Any]:
    """ppokit config keys from keyword arguments in SB3's spelling; ppokit's own keys pass through
    (``PPOConfig.from_dict`` validates them). SB3's printing and TensorBoard options go to
    ``model.sb3``; what cannot map is refused by name (``REFUSED``)."""
    kwargs = dict(kwargs)
    options = model.sb3
    options.verbose = _int_option(kwargs.pop("verbose", 0), "verbose", (0, 1, 2))
    options.tensorboard_log = kwargs.pop("tensorboard_log", None)
    options.stats_window_size = _int_option(kwargs.pop("stats_window_size", 100), "stats_window_size")
    for name, (off, why) in REFUSED.items():
        value = kwargs.pop(name, off)
        if value is not off and value != off:
            raise _refuse(name, value, why)
    out: dict[str, Any] = {}
    if "device" in kwargs:
        out["device"] = resolve_device(kwargs.pop("device"))
    if "seed" in kwargs and kwargs["seed"] is None:  # SB3's None draws a random seed; ppokit's runs
        kwargs.pop("seed")  # are reproducible: its default seed
    for key, schedule_key in (("learning_rate", "lr_schedule"), ("clip_range", "clip_range_schedule")):
        if callable(kwargs.get(key)):
            out[key], out[schedule_key] = schedule_of(key, kwargs.pop(key))
    if kwargs.get("clip_range_vf") is not None:
        value, schedule = schedule_of("clip_range_vf", kwargs["clip_range_vf"])
        if schedule != "constant":
            raise _refuse("clip_range_vf", kwargs["clip_range_vf"], "ppokit's value clip range is a constant")
        out["vf_clip_range"] = value
    kwargs.pop("clip_range_vf", None)
    if "policy_kwargs" in kwargs:
        out["network"] = network_from_policy_kwargs(kwargs.pop("policy_kwargs") or {}, out)
    for key in list(kwargs):
        if key in RENAMED:
            out[RENAMED[key]] = kwargs.pop(key)
    out.update(kwargs)  # SB3's keys spelled as ppokit's (n_steps, gamma, ...) and ppokit's own keys
    return out


def _int_option(value: Any, name: str, allowed: tuple | None = None) -> int:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value in allowed if allowed else value >= 1)
    )
    if not ok:
        rule = f"use one of {list(allowed)}" if allowed else "give a positive integer"
        raise ConfigError(f"{name}={value!r} is not allowed; {rule}")
    return value


def resolve_device(device: Any) -> str:
    """SB3's ``device``: ``"auto"`` is CUDA when available, else the CPU; a ``torch.device`` its name."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        raise ConfigError(f"device={device!r} is not allowed; use auto, cpu, cuda or cuda:N")
    return device


def schedule_of(name: str, value: Any) -> tuple[float, str]:
    """``(initial value, "constant" | "linear")`` of an SB3 value or schedule. SB3 calls a schedule with
    ``progress_remaining`` (1 at the start, 0 at the end); ppokit has the two schedules SB3 users
    write most (a constant, and SB3's ``linear_schedule``: ``initial * progress_remaining``), so a
    callable is sampled and accepted when it is one of them, else refused by name."""
    if not callable(value):
        return value, "constant"
    try:
        points = {p: float(value(p)) for p in (1.0, 0.75, 0.5, 0.25, 0.0)}
    except Exception as e:  # a user's function: any failure is a refusal naming it
        raise ConfigError(
            f"{name}={value!r} is not allowed: calling it with progress 1.0 failed ({e})"
        ) from None
    start = points[1.0]
    if all(np.isclose(v, start, rtol=1e-6, atol=0.0) for v in points.values()):
        return start, "constant"
    if all(np.isclose(v, start * p, rtol=1e-6, atol=1e-12) for p, v in points.items()):
        return start, "linear"
    raise _refuse(
        name, value, "ppokit's schedules are constant and linear to 0 (initial * progress_remaining)"
    )


def network_from_policy_kwargs(policy_kwargs: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """``network`` config keys from SB3's ``policy_kwargs`` (Adam's ``eps``/``betas`` go to ``out``).
    Public so that other loaders of SB3-style files (rl-zoo hyperparameters) translate the same way."""
    if not isinstance(policy_kwargs, dict):
        raise ConfigError(f"policy_kwargs={policy_kwargs!r} is not allowed; give a dict")
    kw, net = dict(policy_kwargs), {}
    for name, (default, why) in POLICY_REFUSED.items():
        value = kw.pop(name, default)
        if value is not default and value != default:
            raise _refuse(f"policy_kwargs[{name!r}]", value, why)
    if "net_arch" in kw:
        net["hidden_sizes"] = hidden_sizes_of(kw.pop("net_arch"))
    if "activation_fn" in kw:
        fn = kw.pop("activation_fn")
        if fn not in ACTIVATIONS:
            names = ", ".join(f"nn.{c.__name__}" for c in ACTIVATIONS)
            raise ConfigError(f"policy_kwargs['activation_fn']={fn!r} is not supported; use one of {names}")
        net["activation"] = ACTIVATIONS[fn]
    for key in ("ortho_init", "log_std_init"):
        if key in kw:
            net[key] = kw.pop(key)
    extractor = kw.pop("features_extractor_kwargs", None) or {}
    if set(extractor) - {"features_dim"}:
        raise _refuse(
            "policy_kwargs['features_extractor_kwargs']", extractor, "ppokit's CNN takes features_dim only"
        )
    if "features_dim" in extractor:
        net["cnn_features"] = extractor["features_dim"]
    optimizer = dict(kw.pop("optimizer_kwargs", None) or {})
    if "eps" in optimizer:
        out["adam_eps"] = optimizer.pop("eps")
    if "betas" in optimizer:
        out["adam_betas"] = list(optimizer.pop("betas"))
    if optimizer:
        raise _refuse("policy_kwargs['optimizer_kwargs']", optimizer, "ppokit's Adam takes eps and betas")
    if kw:
        raise ConfigError(
            f"policy_kwargs keys {sorted(kw)} are not supported; see docs/migrating-from-sb3.md"
        )
    return net


def hidden_sizes_of(net_arch: Any) -> list[int]:
    """ppokit's ``hidden_sizes`` from SB3's ``net_arch``: a list of widths (actor and critic each get
    these layers, as SB3 2.x), or ``dict(pi=[...], vf=[...])`` with equal lists (also SB3 1.x's
    ``[dict(pi=..., vf=...)]``). ppokit's actor and critic have the same widths, so different ``pi``
    and ``vf`` lists, and SB3 1.x's shared leading layers, are refused by name."""
    arch = net_arch
    if isinstance(arch, list) and len(arch) == 1 and isinstance(arch[0], dict):
        arch = arch[0]
    if isinstance(arch, dict):
        if set(arch) - {"pi", "vf"}:
            raise ConfigError(
                f"policy_kwargs['net_arch']={net_arch!r} is not allowed; its keys are pi and vf"
            )
        pi, vf = list(arch.get("pi", [])), list(arch.get("vf", []))
        if pi != vf:
            raise _refuse(
                "policy_kwargs['net_arch']",
                net_arch,
                "ppokit's actor and critic MLPs have the same widths; give pi == vf",
            )
        arch = pi
    if not isinstance(arch, (list, tuple)) or not arch or not all(isinstance(h, int) for h in arch):
        raise _refuse(
            "policy_kwargs['net_arch']",
            net_arch,
            "give a non-empty list of widths or dict(pi=[...], vf=[...])",
        )
    return list(arch)


# -- learn(), get_env(), set_env() -----------------------------------------------------------------------
LEARN_KWARGS = ("log_interval", "tb_log_name")


def before_learn(model: PPO, total_timesteps: Any, sb3_kwargs: dict[str, Any]) -> Any:
    """SB3's ``learn`` habits: a whole-valued float total (``learn(1e4)``), ``log_interval`` (updates
    between verbose tables), ``tb_log_name`` (with ``tensorboard_log``: the run directory
    ``tensorboard_log/<tb_log_name>_<n>``, a new n per run, as SB3 numbers its TensorBoard runs)."""
    unknown = sorted(set(sb3_kwargs) - set(LEARN_KWARGS))
    if unknown:
        raise ConfigError(
            f"learn() got unknown arguments {unknown}; allowed besides ppokit's: {list(LEARN_KWARGS)}"
        )
    options: SB3Options = model.sb3
    options.log_interval = _int_option(sb3_kwargs.get("log_interval", options.log_interval), "log_interval")
    episodes = model.collector.episodes
    if episodes.recent.maxlen != options.stats_window_size:
        import collections

        episodes.recent = collections.deque(episodes.recent, maxlen=options.stats_window_size)
    if options.tensorboard_log and model.run_dir is None:
        name = sb3_kwargs.get("tb_log_name", "PPO")
        root = Path(options.tensorboard_log)
        n = next(i for i in itertools.count(1) if not (root / f"{name}_{i}").exists())
        model.set_run_dir(root / f"{name}_{n}")
    if isinstance(total_timesteps, float) and float(total_timesteps).is_integer() and total_timesteps >= 0:
        return int(total_timesteps)  # SB3 scripts write learn(1e5)
    return total_timesteps


def get_env(model: PPO) -> gym.vector.VectorEnv:
    """The running training vector env (SB3's ``get_env`` returns its VecEnv)."""
    return model.venv


def set_env(model: PPO, env: Any) -> None:
    """Train on ``env`` from now on (an id, factory, instance or ``make_vec_env`` recipe with the same
    spaces and number of envs); the policy, optimizers and normalisation statistics are kept."""
    from ppokit.rl.envs import make_training_envs

    spec, settings = env_and_settings(env)
    num_envs = settings.get("num_envs", model.config.num_envs)
    if num_envs != model.config.num_envs:
        raise ConfigError(
            f"set_env: env with {num_envs} copies is not allowed; the model trains on num_envs="
            f"{model.config.num_envs} (as SB3, the number of envs cannot change)"
        )
    env_id = spec if isinstance(spec, str) else model.config.env_id
    cfg = model.config.replace(env_id=env_id, **{k: v for k, v in settings.items() if k == "env_kwargs"})
    venv, layout = make_training_envs(spec, cfg)
    if (venv.single_observation_space, venv.single_action_space) != (
        model.observation_space,
        model.action_space,
    ):
        venv.close()
        raise ConfigError(
            f"set_env: env with spaces {venv.single_observation_space}, {venv.single_action_space} is not "
            f"allowed; the model has {model.observation_space}, {model.action_space}"
        )
    model.venv.close()
    kept = model.obs_norm, model.reward_scaler
    model.config, model.venv, model.obs_layout = cfg, venv, layout
    model.env_spec, model.env_fn = spec, (None if isinstance(spec, str) else spec)
    model._make_rollout_parts(model.config.seed)  # a fresh collector: the new envs start with a reset
    model.obs_norm, model.reward_scaler = kept
    model.collector.obs_norm, model.collector.reward_scaler = kept


# -- evaluate_policy ---------------------------------------------------------------------------------------
def _single_env(model: PPO, env: Any) -> tuple[gym.Env, bool]:
    """``(one gym.Env to run episodes on, whether this function made it and must close it)``. An
    instance is used as it is (as SB3); an id gets the model's env_kwargs, packages and wrappers when it
    is the model's own id; a recipe or factory is called."""
    from ppokit.rl.envs import check_env_id
    from ppokit.rl.wrappers import apply_wrappers

    if isinstance(env, gym.Env):
        return env, False
    if env is getattr(model, "venv", None):  # SB3's evaluate_policy(model, model.get_env()): a fresh copy
        return _single_env(model, model.env_spec)
    if isinstance(env, VecEnvRecipe):
        return _single_env(model, env.env)
    if isinstance(env, str):
        cfg = model.config
        own = env == cfg.env_id
        check_env_id(env, cfg.gym_packages)
        made = gym.make(env.rpartition(":")[2], **(cfg.env_kwargs if own else {}))
        return apply_wrappers(made, list(cfg.env_wrappers) if own else []), True
    if callable(env):
        return env(), True
    raise ConfigError(f"env={env!r} is not allowed; pass an env instance, an env id or a factory")


def _action_mask(model: PPO, env: gym.Env, info: dict) -> np.ndarray | None:
    """The env's action mask when the model trained with masks (an ``action_masks()`` method or
    ``info["action_mask"]``, rl/masking.py's first two conventions)."""
    if not model.masked:
        return None
    method = getattr(env.unwrapped, "action_masks", None) or getattr(env, "action_masks", None)
    return np.asarray(method()) if method is not None else info.get("action_mask")


def evaluate_policy(
    model: PPO,
    env: Any,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    render: bool = False,
    callback: Callable[[dict, dict], None] | None = None,
    reward_threshold: float | None = None,
    return_episode_rewards: bool = False,
    warn: bool = True,
) -> tuple[float, float] | tuple[list[float], list[int]]:
    """SB3's ``evaluate_policy``: run ``n_eval_episodes`` episodes of ``model`` on ``env`` (an instance,
    used as it is; an id, a factory or a ``make_vec_env`` recipe, made once) and return ``(mean, std)``
    of the episode returns, or with ``return_episode_rewards`` the lists ``(returns, lengths)``.
    Returns are the env's rewards as ``env`` gives them (wrap it as you want them counted). A recurrent
    policy carries its state; a masked one gets the env's masks. ``callback(locals, globals)`` runs
    after every step; ``reward_threshold`` raises AssertionError when the mean return is below it."""
    if isinstance(n_eval_episodes, bool) or not isinstance(n_eval_episodes, int) or n_eval_episodes < 1:
        raise ConfigError(f"n_eval_episodes={n_eval_episodes!r} is not allowed; give a positive integer")
    one, owned = _single_env(model, env)
    rewards: list[float] = []
    lengths: list[int] = []
    try:
        for _ in range(n_eval_episodes):
            obs, info = one.reset()
            state, start = None, np.ones(1, dtype=bool)
            ret, length, done = 0.0, 0, False
            while not done:
                mask = _action_mask(model, one, info)
                action, state = model.predict(
                    obs, state, start, deterministic=deterministic, action_masks=mask
                )
                obs, reward, terminated, truncated, info = one.step(action)
                ret, length = ret + float(reward), length + 1
                done = bool(terminated or truncated)
                start = np.zeros(1, dtype=bool)
                if render:
                    one.render()
                if callback is not None:
                    callback(locals(), globals())
            rewards.append(ret)
            lengths.append(length)
    finally:
        if owned:
            one.close()
    mean, std = float(np.mean(rewards)), float(np.std(rewards))
    if reward_threshold is not None and mean < reward_threshold:
        raise AssertionError(f"mean reward {mean:.2f} is below the threshold {reward_threshold:.2f}")
    return (rewards, lengths) if return_episode_rewards else (mean, std)
