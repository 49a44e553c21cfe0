"""rl-baselines3-zoo hyperparameter files (``hyperparams/ppo.yml``) read into a ``PPOConfig``.

A zoo file maps env ids to their hyperparameters, in Stable-Baselines3's spellings, with a few
conventions of its own (https://rl-baselines3-zoo.readthedocs.io, "Configuration"):

- ``n_timesteps`` is the training budget, ``n_envs`` the number of environments, ``policy`` the SB3
  policy class name (ppokit picks its encoder from the observation space, so all three SB3 names map);
- ``policy_kwargs`` is a Python expression in a string, ``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``.
  It is parsed here with ``ast`` and never evaluated: only literals, ``dict(...)`` calls and a short
  list of names (``nn.<Activation>``, Adam) are accepted;
- ``lin_0.001`` is a schedule falling linearly from 0.001 to 0 (``learning_rate`` and ``clip_range``);
- ``normalize`` is ``true`` or a dict in a string, ``"{'norm_obs': True, 'norm_reward': False}"``
  (VecNormalize's arguments);
- ``env_wrapper`` names wrappers; ``AtariWrapper`` plus ``frame_stack`` become the settings of ALE's own
  vector env (the ones configs/ALE/*.yaml use); an ``atari`` entry serves every Atari id.

What cannot be mapped is refused by name with the reason (``use_sde``: ppokit has no gSDE); what only
steers SB3's bookkeeping (``callback``, ``verbose``) is warned about once and ignored.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppokit.config import read_yaml_mapping, short
from ppokit.errors import ConfigError
from ppokit.rl.config import PPOConfig

# SB3 PPO keys whose meaning and spelling ppokit shares (n_envs and clip_range_vf via config ALIASES)
SAME = (
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "normalize_advantage",
    "clip_range_vf",
    "n_envs",
    "env_kwargs",
)
# keys that steer SB3's or the zoo's bookkeeping, not the learning: ignored with one warning each
IGNORED = {
    "callback": "pass callbacks to PPO.learn(callback=...) instead",
    "verbose": "ppokit always logs to metrics.csv",
    "tensorboard_log": "ppokit writes TensorBoard events under RUN_DIR/tb (tensorboard: true)",
    "stats_window_size": "ppokit's rollout/ep_rew_mean averages the last 100 episodes",
    "sde_sample_freq": "only used with use_sde, which is false here",
    "device": "set device in the config or with --device",
}
# why the keys ppokit cannot honour are refused
REFUSED = {
    "use_sde": "ppokit has no generalised State-Dependent Exploration (gSDE); remove use_sde (its "
    "Gaussian policy explores with a state-independent std, network.log_std_init)",
    "vec_env_wrapper": "ppokit builds its own vector envs; use env_wrapper (per-env wrappers) instead",
    "policy_delay": "not a PPO hyperparameter",
    "rollout_buffer_class": "ppokit has one rollout buffer",
    "rollout_buffer_kwargs": "ppokit has one rollout buffer",
}
POLICIES = ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")
ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "ELU": "elu"}
# names a policy_kwargs string may use; anything else (a call, an import, an attribute of os) is refused
KNOWN_NAMES = {f"{m}.{a}" for m in ("nn", "th.nn", "torch.nn") for a in ("Tanh", "ReLU", "ELU", "LeakyReLU",
               "GELU", "SiLU", "Sigmoid", "Softplus", "SELU", "Identity")}  # fmt: skip
KNOWN_NAMES |= {"th.optim.Adam", "torch.optim.Adam", "optim.Adam", "RMSpropTFLike", "th.optim.RMSprop"}
KNOWN_NAMES |= {"True", "False", "None"}


@dataclass(frozen=True)
class Name:
    """A whitelisted name in a ``policy_kwargs`` string (``nn.ReLU``), kept as its text."""

    text: str

    @property
    def last(self) -> str:
        """The last part of the dotted name: ``ReLU`` for ``nn.ReLU``."""
        return self.text.rpartition(".")[2]


def parse_literal(text: str, key: str = "policy_kwargs") -> Any:
    """The value of a zoo Python-literal string (``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``),
    built from its syntax tree without ``eval``: numbers, strings, booleans, None, lists, tuples,
    ``{...}`` and ``dict(k=v)``, and the names of ``KNOWN_NAMES`` (returned as ``Name``)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ConfigError(f"{key}={short(text)} is not a Python literal: {e.msg}") from None
    return _value(tree, key, text)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _value(node: ast.AST, key: str, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand, key, text)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return -inner
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, key, text) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_value(k, key, text): _value(v, key, text) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and _dotted(node.func) == "dict" and not node.args:
        if all(kw.arg is not None for kw in node.keywords):
            return {kw.arg: _value(kw.value, key, text) for kw in node.keywords}
    name = _dotted(node)
    if name in KNOWN_NAMES:
        return {"True": True, "False": False, "None": None}.get(name, Name(name))
    raise ConfigError(
        f"{key}={short(text)} is not allowed: {short(ast.unparse(node))} is not a literal, dict(...) or "
        f"one of the names ppokit reads ({', '.join(sorted(n for n in KNOWN_NAMES if n.startswith('nn.')))}, "
        "th.optim.Adam); the string is parsed, never run"
    )


def schedule(value: Any, key: str) -> tuple[float, str]:
    """``(initial value, "linear" | "constant")`` of a zoo number or ``lin_<value>`` string."""
    if isinstance(value, str):
        m = re.fullmatch(r"lin_([-+]?[\d.]+(?:[eE][-+]?\d+)?)", value.strip())
        if m:
            return float(m.group(1)), "linear"
        try:
            return float(value), "constant"
        except ValueError:
            raise ConfigError(
                f"{key}={short(value)} is not allowed; give a number or lin_<number> (linear to 0)"
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), "constant"
    raise ConfigError(f"{key}={short(value)} is not allowed; give a number or lin_<number> (linear to 0)")


def map_policy_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """PPOConfig keys (``network.*``, ``adam_*``) for SB3 ``policy_kwargs``; a key ppokit cannot honour
    is a ConfigError naming it and why."""
    out: dict[str, Any] = {}
    net: dict[str, Any] = {}
    for k, v in kwargs.items():
        full = f"{where}policy_kwargs.{k}"
        if k == "net_arch":
            net["hidden_sizes"] = _net_arch(v, full)
        elif k == "activation_fn":
            if not isinstance(v, Name) or v.last not in ACTIVATIONS:
                raise ConfigError(f"{full}={short(v)} is not allowed; ppokit has nn.Tanh, nn.ReLU and nn.ELU")
            net["activation"] = ACTIVATIONS[v.last]
        elif k in ("ortho_init", "log_std_init"):
            net[k] = v
        elif k == "features_extractor_kwargs" and isinstance(v, dict) and set(v) <= {"features_dim"}:
            if "features_dim" in v:
                net["cnn_features"] = v["features_dim"]
        elif k == "optimizer_class":
            if not isinstance(v, Name) or v.last != "Adam":
                raise ConfigError(f"{full}={short(v)} is not allowed; ppokit optimises with Adam")
        elif k == "optimizer_kwargs" and isinstance(v, dict) and set(v) <= {"eps", "betas"}:
            if "eps" in v:
                out["adam_eps"] = v["eps"]
            if "betas" in v:
                out["adam_betas"] = list(v["betas"])
        elif k in ("normalize_images", "share_features_extractor") and v is True:
            pass  # SB3's defaults, and ppokit's behaviour: images scaled by 1/255, one shared CNN
        else:
            raise ConfigError(
                f"{full}={short(v)} is not supported; ppokit reads net_arch, activation_fn, ortho_init, "
                "log_std_init, features_extractor_kwargs.features_dim, optimizer_class (Adam) and "
                "optimizer_kwargs (eps, betas)"
            )
    if net:
        out["network"] = net
    return out


def _net_arch(value: Any, full: str) -> list[int]:
    """SB3's ``net_arch``: ``[64, 64]``, ``dict(pi=[..], vf=[..])``, or SB3 < 1.8's ``[dict(..)]``."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict) and set(value) == {"pi", "vf"}:
        if value["pi"] != value["vf"]:
            raise ConfigError(
                f"{full}={short(value)} is not supported; ppokit's actor and critic have the same widths "
                "(network.hidden_sizes): give pi and vf the same list"
            )
        value = value["pi"]
    if isinstance(value, list) and value and all(isinstance(h, int) and h > 0 for h in value):
        return value
    raise ConfigError(
        f"{full}={short(value)} is not supported; give a list of widths or dict(pi=[..], vf=[..])"
    )


def map_normalize(value: Any, where: str) -> dict[str, Any]:
    """PPOConfig keys for the zoo's ``normalize``: true/false, or VecNormalize's arguments as a dict
    (a string one parsed with ``parse_literal`` first)."""
    if isinstance(value, bool):
        return {"normalize_obs": value, "normalize_reward": value}  # VecNormalize's defaults: both
    if not isinstance(value, dict):
        raise ConfigError(f"{where}normalize={short(value)} is not allowed; give true/false or a dict")
    names = {"norm_obs": "normalize_obs", "norm_reward": "normalize_reward", "clip_obs": "obs_clip"}
    names["clip_reward"] = "reward_clip"
    out = {"normalize_obs": True, "normalize_reward": True}
    for k, v in value.items():
        if k in names:
            out[names[k]] = v
        elif k != "gamma":  # gamma: checked by the caller against the entry's gamma
            raise ConfigError(
                f"{where}normalize.{k}={short(v)} is not supported; ppokit reads norm_obs, norm_reward, "
                "clip_obs, clip_reward and gamma"
            )
    return out


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an Atari game id (``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``)."""
    return env_id.startswith("ALE/") or bool(re.fullmatch(r"\w+NoFrameskip-v[04]", env_id))


def _ale_id(env_id: str) -> str:
    """ALE's own id for an Atari id: ``BreakoutNoFrameskip-v4`` -> ``ALE/Breakout-v5``."""
    m = re.fullmatch(r"(\w+)NoFrameskip-v[04]", env_id)
    return f"ALE/{m.group(1)}-v5" if m else env_id


# SB3's AtariWrapper arguments -> AtariVectorEnv's (ale_py.vector_env), with AtariWrapper's defaults
ATARI_WRAPPER = {
    "noop_max": ("noop_max", 30),
    "frame_skip": ("frameskip", 4),
    "screen_size": ("img_height", 84),
    "terminal_on_life_loss": ("episodic_life", True),
    "clip_reward": ("reward_clipping", True),
    "action_repeat_probability": ("repeat_action_probability", 0.0),
}


def _wrappers(value: Any, env_id: str, frame_stack: Any, where: str) -> tuple[dict[str, Any], list]:
    """``(env_kwargs, env_wrappers)`` for the zoo's ``env_wrapper`` and ``frame_stack``."""
    entries = value if isinstance(value, list) else ([] if value is None else [value])
    env_kwargs: dict[str, Any] = {}
    wrappers = []
    atari = False
    for entry in entries:
        name, kwargs = (entry, {}) if isinstance(entry, str) else next(iter(dict(entry).items()))
        if str(name).endswith("atari_wrappers.AtariWrapper"):
            if not is_atari(env_id):
                raise ConfigError(
                    f"{where}env_wrapper={short(name)} is not allowed for {env_id!r}: not Atari"
                )
            atari = True
            for k, v in (kwargs or {}).items():
                if k not in ATARI_WRAPPER:
                    raise ConfigError(
                        f"{where}env_wrapper AtariWrapper {k}={short(v)} is not supported; ppokit reads "
                        f"{', '.join(ATARI_WRAPPER)}"
                    )
            for k, (ale, default) in ATARI_WRAPPER.items():
                env_kwargs[ale] = (kwargs or {}).get(k, default)
            if "action_repeat_probability" not in (kwargs or {}):  # the id's own sticky actions stay
                del env_kwargs["repeat_action_probability"]
            env_kwargs["img_width"] = env_kwargs["img_height"]
        else:
            wrappers.append(entry)
    if atari:
        # the rest of AtariWrapper: max-pool over the last two frames, grayscale, FIRE at reset
        env_kwargs.update(maxpool=True, grayscale=True, use_fire_reset=True, stack_num=int(frame_stack or 1))
    elif frame_stack not in (None, 1):
        raise ConfigError(
            f"{where}frame_stack={short(frame_stack)} is not supported for {env_id!r}: ppokit maps it to "
            "ALE's frame stack with the AtariWrapper; elsewhere add "
            "gymnasium.wrappers.FrameStackObservation to env_wrapper"
        )
    return env_kwargs, wrappers


def pick_entry(data: dict[str, Any], env_id: str | None, source: str) -> tuple[str, str, dict[str, Any]]:
    """``(env id, entry name, entry)``: the entry for ``env_id`` (Atari ids fall back to ``atari``); with
    no ``env_id``, the file's only entry."""
    names = [str(k) for k in data]
    if env_id is None:
        envs = [n for n in names if n != "atari"]
        if len(envs) != 1:
            raise ConfigError(
                f"zoo file {source} holds {len(envs)} envs ({short(envs)}): choose one with --env"
            )
        env_id = envs[0]
    key = env_id if env_id in data else ("atari" if is_atari(env_id) and "atari" in data else None)
    if key is None:
        raise ConfigError(f"zoo file {source} has no entry for env {env_id!r}; it has {short(names)}")
    entry = data[key]
    if not isinstance(entry, dict):
        raise ConfigError(f"zoo file {source}: entry {key!r} must be a mapping, got {type(entry).__name__}")
    return env_id, key, entry


def zoo_data(data: dict[str, Any], env_id: str | None, source: str = "<zoo>") -> dict[str, Any]:
    """The PPOConfig keys (canonical names) of the zoo entry for ``env_id`` in ``data`` (a zoo file's
    mapping), for layering under command-line flags; unmappable keys raise ConfigError."""
    env_id, key, entry = pick_entry(data, env_id, source)
    where = f"{source} [{key}]: "
    entry = dict(entry)
    out: dict[str, Any] = {"env_id": _ale_id(env_id)}
    env_kwargs, wrappers = _wrappers(
        entry.pop("env_wrapper", None), env_id, entry.pop("frame_stack", None), where
    )
    if env_id != out["env_id"]:
        # ALE's vector env serves the v5 id; sticky actions off, as the NoFrameskip-v4 ids have them
        env_kwargs.setdefault("repeat_action_probability", 0.0)
    use_sde = entry.pop("use_sde", False)
    if use_sde:
        raise ConfigError(f"{where}use_sde={short(use_sde)} is not supported: {REFUSED['use_sde']}")
    for k, v in entry.items():
        _one_key(out, k, v, entry, where)
    if env_kwargs or "env_kwargs" in out:
        out["env_kwargs"] = {**env_kwargs, **dict(out.get("env_kwargs") or {})}
    if wrappers:
        out["env_wrappers"] = wrappers
    return PPOConfig.canonicalize(out)


def _one_key(out: dict[str, Any], k: str, v: Any, entry: dict[str, Any], where: str) -> None:
    """Map one zoo key into ``out`` (PPOConfig keys)."""
    if k in SAME:
        out[k] = v
    elif k == "n_timesteps":
        if isinstance(v, str) and re.fullmatch(r"[\d.]+(?:[eE][-+]?\d+)?", v.strip()):
            v = float(v)  # YAML 1.1 reads 1e5 as a string (the zoo writes !!float 1e5 for that reason)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v != int(v):
            raise ConfigError(f"{where}n_timesteps={short(v)} is not allowed; give a whole number of steps")
        out["total_timesteps"] = int(v)
    elif k == "policy":
        if v not in POLICIES:
            raise ConfigError(
                f"{where}policy={short(v)} is not supported; ppokit's PPO takes {', '.join(POLICIES)} (it "
                "picks the encoder from the observation space; recurrent: network.recurrent)"
            )
    elif k in ("learning_rate", "clip_range"):
        out[k], kind = schedule(v, f"{where}{k}")
        out["lr_schedule" if k == "learning_rate" else "clip_range_schedule"] = kind
    elif k == "policy_kwargs":
        parsed = parse_literal(v, f"{where}policy_kwargs") if isinstance(v, str) else v
        if not isinstance(parsed, dict):
            raise ConfigError(f"{where}policy_kwargs={short(v)} is not allowed; give dict(...)")
        for pk, pv in map_policy_kwargs(parsed, where).items():
            out[pk] = {**out.get(pk, {}), **pv} if isinstance(pv, dict) else pv
    elif k in ("normalize", "normalize_kwargs"):
        v = parse_literal(v, f"{where}{k}") if isinstance(v, str) else v
        mapped = map_normalize(v, where)
        norm_gamma = v.get("gamma") if isinstance(v, dict) else None
        if norm_gamma is not None and norm_gamma != entry.get("gamma", 0.99):
            raise ConfigError(
                f"{where}normalize.gamma={short(norm_gamma)} is not supported; ppokit scales rewards with "
                "the config's gamma: remove it or set gamma to the same value"
            )
        out.update(mapped)
    elif k in IGNORED:
        warnings.warn(f"{where}{k} is ignored: {IGNORED[k]}", UserWarning, stacklevel=3)
    elif k in REFUSED:
        raise ConfigError(f"{where}{k}={short(v)} is not supported: {REFUSED[k]}")
    else:
        raise ConfigError(f"{where}{k}={short(v)} is not a zoo PPO hyperparameter ppokit knows")


def is_zoo_mapping(data: dict[str, Any]) -> bool:
    """Whether a YAML mapping is a zoo hyperparameter file: no PPOConfig key at the top, and every
    value a mapping (one per env id)."""
    if not data or not all(isinstance(v, dict) for v in data.values()):
        return False
    return not any(
        PPOConfig.canonical_key(str(k)).split(".")[0] in PPOConfig.__dataclass_fields__ for k in data
    )


def load_zoo(path: str | Path, env_id: str | None = None) -> PPOConfig:
    """The ``PPOConfig`` of ``env_id``'s entry in the rl-zoo hyperparameter file ``path`` (the file's only
    entry when ``env_id`` is None); keys ppokit cannot map raise ConfigError naming them."""
    return PPOConfig.from_dict(zoo_data(read_yaml_mapping(path), env_id, str(path)))


__all__ = ["Name", "is_atari", "is_zoo_mapping", "load_zoo", "parse_literal", "schedule", "zoo_data"]
