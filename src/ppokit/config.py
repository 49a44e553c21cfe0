"""Typed, documented, validated configuration dataclasses with YAML round-trip and dotted overrides.

Every field carries a ``help`` string in its metadata: the CLI shows it under ``--help`` and the
README's config table is generated from it. ``validate()`` raises ``ConfigError`` naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import reprlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ppokit.config_aliases import ALIASES, FOREIGN_KEYS  # re-exported: ppokit.config.ALIASES is the table
from ppokit.errors import ConfigError
from ppokit.train.files import atomic_write

# Values in error messages are shortened: a 551-byte YAML of nested aliases expands to gigabytes
# when printed in full (issue 16: the error message never returned), and a 50 MB value made a 50 MB
# one-line error. reprlib bounds the depth, the items shown and the length of strings.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 80
MAX_STRING = 4096  # longest string value a config accepts (ids, paths, names)
MAX_CONFIG_BYTES = 1_000_000  # largest config file read
MAX_CONFIG_FLOAT = 1e30  # largest magnitude of a float setting: float32 (max 3.4e38) must hold it scaled
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: the same rules, ~10x faster
MAX_YAML_DEPTH = 100  # deeper nesting is no config: 60,000-deep `[[[...` raised RecursionError (issue 34)


class SafeLoader(_BaseLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last and
    drops the first without a word, so a duplicated section silently lost its settings (issue 34)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:  # noqa: D102
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(
                    f"key {short(key)} is given twice in one mapping (lines {seen[key]} and {line}); "
                    "YAML would silently keep only the last: remove one"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML by ``SafeLoader`` (duplicate keys refused); a nesting deeper than
    ``MAX_YAML_DEPTH`` is a ConfigError, not a RecursionError from the parser."""
    depth = deepest = 0
    for ch in text:  # a cheap upper bound on flow nesting, checked before the recursive parser runs
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_YAML_DEPTH:
        raise ConfigError(f"YAML value nests {deepest} levels deep; at most {MAX_YAML_DEPTH} are allowed")
    try:
        return yaml.load(text, Loader=SafeLoader)
    except RecursionError:
        raise ConfigError(
            f"YAML value nests too deeply; at most {MAX_YAML_DEPTH} levels are allowed"
        ) from None


def short(value: Any) -> str:
    """``repr(value)``, shortened for an error message (bounded depth, items and length)."""
    return _REPR.repr(value)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line and at most ``limit`` characters (PyYAML and torch messages span lines)."""
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(value: Any, *, finite: bool = False) -> bool:
    """Whether ``value`` is one real number: a Python int or float, a numpy real scalar, or a
    one-element real tensor or array (``finite``: and neither NaN nor +-inf).

    ``bool`` is not a number, nor a bool scalar or tensor: a YAML ``true`` for a float field, or a
    reward function returning ``True``, is a mistake to name, not 1.0 (issue 29: three checks
    disagreed on this; this is the one every caller uses). Strings are not numbers either (the
    config reader turns YAML 1.1's ``"3e-4"`` into a float before it asks).
    """
    if hasattr(value, "item") and not isinstance(value, numbers.Real):
        try:
            value = value.item()  # a numpy scalar, or a one-element tensor/array
        except (ValueError, RuntimeError, TypeError):  # more than one element, or not a number
            return False
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return not finite or math.isfinite(value)


def option(default: Any, help: str, *, choices: tuple | None = None) -> Any:  # noqa: A002
    """A dataclass field with a help text (and optional allowed values) in its metadata."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return field(default=default, metadata=meta)


def checkpoint_every_seconds_option() -> Any:
    """The ``checkpoint_every_seconds`` field both sides' configs have (one meaning, one text)."""
    return option(
        300.0,
        "Also write a checkpoint once this many seconds of wall-clock passed since the last one (0: off), "
        "so that a killed run loses at most this much work. A checkpoint is always written at the end.",
    )


def step_timeout_option() -> Any:
    """The ``step_timeout`` field both sides' configs have (``train/loop.py`` enforces it)."""
    return option(
        0.0,
        "Stop the run (StepTimeoutError, after a checkpoint of the last completed step) when one step "
        "takes longer than this many seconds: a PPO update (rollout and epochs) or an LM step "
        "(generation, rewards, optimizer steps); for an env.step or a reward function that can hang. "
        "0: no limit. A stall is reported after PPOKIT_STALL_SECONDS (600) either way.",
    )


REPORT_TO = ("tensorboard", "wandb")
# what a `device` may name; ppokit.distributed.resolve_device says which torch.device it is here
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_SPEC = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # the same, as a pattern (fullmatch)


def report_to_option() -> Any:
    """The ``report_to`` field (TRL's name): where metrics go besides metrics.csv. The classic side's
    config has it (``Tracker(report_to=...)``); the LM side's can share it."""
    return option(
        None,
        "Where metrics go besides metrics.csv: any of tensorboard, wandb (null: tensorboard when "
        "`tensorboard` is true). wandb (the wandb extra) honours WANDB_MODE=offline.",
    )


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return is_number(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    return isinstance(value, tp)


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _accepts_float(tp: Any) -> bool:
    return tp is float or (typing.get_origin(tp) is not None and float in typing.get_args(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class ConfigBase:
    """Mixin for config dataclasses: ``from_dict``, ``to_dict``, YAML I/O, overrides, validation."""

    @classmethod
    def fields_help(cls) -> list[tuple[str, str, Any, str]]:
        """``(dotted_key, type, default, help)`` for every field, nested sections flattened."""
        rows = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                for key, t, d, h in tp.fields_help():
                    rows.append((f"{f.name}.{key}", t, d, h))
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            help_ = f.metadata.get("help", "")
            if f.metadata.get("choices"):
                help_ += f" One of: {', '.join(map(str, f.metadata['choices']))}."
            rows.append((f.name, _type_name(tp), default, help_))
        return rows

    @classmethod
    def canonical_key(cls, key: str) -> str:
        """``key`` (dotted for sections) with every alias this class knows replaced by its canonical
        name, level by level; a key the class does not know comes back unchanged."""
        head, _, rest = key.partition(".")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        if head not in names and head in ALIASES and has_key(cls, ALIASES[head][0]):
            return ALIASES[head][0] + (f".{rest}" if rest else "")
        tp = hints.get(head)
        if rest and dataclasses.is_dataclass(tp):
            return f"{head}.{tp.canonical_key(rest)}"
        return key

    @classmethod
    def canonicalize(cls, data: dict[str, Any], _prefix: str = "") -> dict[str, Any]:
        """A copy of ``data`` with every alias (see ``ALIASES``) this class or one of its sections knows
        rewritten to its canonical key. An alias and its canonical key both given is a ConfigError;
        an alias whose target this class lacks stays as it is (``from_dict`` calls it unknown)."""
        names = {f.name for f in dataclasses.fields(cls)}
        is_alias = lambda k: k not in names and k in ALIASES and has_key(cls, ALIASES[k][0])
        out = {k: v for k, v in data.items() if not is_alias(k)}
        written: dict[str, str] = {}  # canonical key -> the alias that set it
        for key in filter(is_alias, data):
            target = ALIASES[key][0]
            *sections, last = target.split(".")
            node = out
            for part in sections:  # a dotted target: max_completion_length -> generation.*
                section = node.get(part, {})
                section = section.to_dict() if isinstance(section, ConfigBase) else section
                if not isinstance(section, dict):
                    raise ConfigError(f"section {_prefix + part!r} must be a mapping of keys to values")
                node[part] = node = dict(section)
            if last in node:
                other = written.get(target, target)
                raise ConfigError(
                    f"config keys {_prefix + key!r} and {_prefix + other!r} name the same setting "
                    f"({target!r}; {key!r} is an alias of it); give one of them"
                )
            node[last] = data[key]
            written[target] = key
        hints = typing.get_type_hints(cls)
        for key, value in out.items():
            tp = hints.get(key) if key in names else None
            if dataclasses.is_dataclass(tp) and isinstance(value, dict):
                out[key] = tp.canonicalize(value, _prefix=f"{_prefix}{key}.")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, _prefix: str = "") -> Any:
        """Build from a plain dict, rejecting unknown keys (with a suggestion) and wrong types.

        Other libraries' spellings of a key (``ALIASES``) are accepted and stored under the canonical
        name, so a config saved by ``save_yaml`` always uses canonical names."""
        if data is not None and not isinstance(data, dict):
            where = f"section {_prefix[:-1]!r}" if _prefix else "a config"
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
        given = dict(data or {})
        data = cls.canonicalize(given, _prefix)
        # canonical key -> the alias the user wrote, to name it in a validation error
        given_as = {ALIASES[k][0]: k for k in given if k not in data and k in ALIASES}
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in data.items():
            full = f"{_prefix}{key}"
            if key not in names:
                close = difflib.get_close_matches(str(key)[:200], names, n=1)
                hint = f"; did you mean {_prefix + close[0]!r}?" if close else f"; known keys: {names}"
                if key in FOREIGN_KEYS and "env_id" in names:  # the Gymnasium config (rl-zoo's keys)
                    hint = f": {FOREIGN_KEYS[key]}"
                elif isinstance(value, dict) and {"n_timesteps", "policy"} & set(value):
                    hint = f": it looks like an rl-zoo hyperparameter file: --zoo FILE --env {short(key)}"
                raise ConfigError(f"unknown config key {short(full)}{hint}")
            tp = hints[key]
            if dataclasses.is_dataclass(tp) and isinstance(value, dict):
                value = tp.from_dict(value, _prefix=f"{full}.")
            elif isinstance(value, str) and _accepts_float(tp) and _FLOAT_RE.fullmatch(value.strip()):
                # YAML 1.1 reads `learning_rate: 3e-4` as the string "3e-4"; the user means a number.
                value = float(value)
            elif not _type_ok(value, tp):
                raise ConfigError(
                    f"{full}={short(value)} has type {type(value).__name__}; expected {_type_name(tp)}"
                    + (f" (given as {given_as[key]!r})" if key in given_as else "")
                )
            elif _accepts_float(tp):
                value = float(value) if is_number(value) else value
            if isinstance(value, tuple):
                value = list(value)
            kwargs[key] = value
        obj = cls(**kwargs)
        try:
            obj.validate()
        except ConfigError as e:
            msg = str(e)
            # a section's shared rules name its own field ("activation='foo' ..."): name the section too
            if _prefix and msg.startswith(tuple(f"{k}=" for k in names)):
                msg = _prefix + msg
            # "clip_range=1.5 is not allowed" reads oddly to a user who wrote epsilon: 1.5
            named = [k for k in given_as if msg.startswith(f"{_prefix}{k}=")]
            if named:
                msg += f" (given as {given_as[named[0]]!r})"
            if msg == str(e):
                raise
            raise ConfigError(msg) from None
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe)."""
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (re-loadable with ``load_yaml`` or ``--config``)."""
        # atomic and never through a link: a kill mid-write left a 0-byte config.yaml that the next
        # resume read as all defaults (issue 34)
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Any:
        """Read a YAML file (a missing file or bad YAML raises ConfigError), apply overrides."""
        return cls.from_dict(apply_overrides(read_yaml_mapping(path), overrides or [], cls))

    def replace(self, **changes: Any) -> Any:
        """A validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Check allowed values; subclasses extend. Base: every ``choices`` field holds a listed value."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={short(value)} is not allowed; choose one of {list(choices)}")
            # NaN passes no comparison-based rule by accident, and Inf turns every update into NaN.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} is not allowed; must be a finite number")
            # Finite but past float32's range once scaled (3.4e38): learning_rate=3.4e37 or
            # vf_clip_range=3.4e38 raised "value cannot be converted to type float without overflow"
            # inside the update (the property-based config test found both).
            if isinstance(value, float) and abs(value) > MAX_CONFIG_FLOAT:
                raise ConfigError(
                    f"{f.name}={value!r} is not allowed; its magnitude must be at most {MAX_CONFIG_FLOAT:g} "
                    "(training computes in float32)"
                )
            if isinstance(value, str) and len(value) > MAX_STRING:  # a pasted file, not an id or a path
                raise ConfigError(
                    f"{f.name}={short(value)} is not allowed; {len(value)} characters, at most {MAX_STRING}"
                )
            if isinstance(value, ConfigBase):
                value.validate()

    # The rules the configs' ``validate`` share, so that each states a rule once for all its keys.
    def check_each(self, keys: tuple[str, ...], ok: Callable[[Any], bool], rule: str) -> None:
        """``check`` every key of ``keys`` with one rule: ``ok(value)`` must hold."""
        for key in keys:
            check(ok(getattr(self, key)), key, getattr(self, key), rule)

    def check_divides(self, key: str, total: int, total_name: str, why: str = "") -> None:
        """The value of ``key`` must split ``total`` (``total_name`` in the message) into equal parts."""
        value = getattr(self, key)
        check(total % value == 0, key, value, f"must divide {total_name}{total}{why}")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; ConfigError for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    try:
        exists = path.is_file()
    except OSError as e:  # a name too long for the file system, ...
        raise ConfigError(f"config file {short(str(path))} cannot be read: {e.strerror or e}") from None
    if not exists:
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {short(str(path))} {what}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:  # a config is a few kB; parsing megabytes of YAML takes minutes
        raise ConfigError(
            f"config file {short(str(path))} is {size:,} bytes; a config is a few kB (at most "
            f"{MAX_CONFIG_BYTES:,}): is this the right file?"
        )
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except ConfigError as e:
        raise ConfigError(f"config file {short(str(path))}: {e}") from None
    except yaml.YAMLError as e:  # PyYAML's message spans several lines (with a caret): make it one
        raise ConfigError(f"config file {short(str(path))} is not valid YAML: {one_line(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {short(str(path))} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"config file {short(str(path))} cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {short(str(path))} must hold a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (``1e-3`` -> float, ``[64,64]`` -> list, ``null``)."""
    try:
        value = parse_yaml(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-3" as a string; accept it as a float like a user means it.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(
    data: dict[str, Any], overrides: list[str], config_cls: type[ConfigBase] | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict (copy); a malformed one raises ConfigError.

    With ``config_cls``, ``data`` and the override keys are first brought to canonical names, so an
    alias overrides the canonical key a preset or a saved config holds (``--set epsilon=0.3`` on a
    config.yaml that says ``clip_range: 0.2``) instead of clashing with it."""
    if config_cls is not None:
        data = config_cls.canonicalize(data)
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {short(item)} must look like key=value (e.g. learning_rate=1e-3)")
        key, text = item.split("=", 1)
        key = config_cls.canonical_key(key.strip()) if config_cls is not None else key
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {short(item)}: {short(p)} is not a section")
        node[parts[-1]] = parse_value(text.strip())
    return data


def has_key(cls: Any, dotted: str) -> bool:
    """Whether config class ``cls`` has the (dotted) key ``dotted``."""
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        return False
    tp = typing.get_type_hints(cls)[head]
    return not rest or (dataclasses.is_dataclass(tp) and has_key(tp, rest))


def check(cond: bool, key: str, value: Any, rule: str) -> None:
    """Raise ``ConfigError('key=value ...; rule')`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}={short(value)} is not allowed; {rule}")


def check_adam_betas(betas: list[float]) -> None:
    """Adam's ``(beta1, beta2)``, the ``adam_betas`` key both sides' configs have: two numbers in [0, 1)."""
    check(
        len(betas) == 2 and all(0 <= b < 1 for b in betas), "adam_betas", betas, "give two numbers in [0, 1)"
    )


__all__ = [
    "ALIASES",
    "ConfigBase",
    "ConfigError",
    "apply_overrides",
    "check",
    "check_adam_betas",
    "has_key",
    "dataclass",
    "one_line",
    "option",
    "parse_value",
    "short",
]
