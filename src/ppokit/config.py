"""Typed, documented, validated configuration dataclasses with YAML round-trip and dotted overrides.

Every field carries a ``help`` string in its metadata: the CLI shows it under ``--help`` and the
README's config table is generated from it. ``validate()`` raises ``ConfigError`` naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ppokit.errors import ConfigError


def option(default: Any, help: str, *, choices: tuple | None = None) -> Any:  # noqa: A002
    """A dataclass field with a help text (and optional allowed values) in its metadata."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: dataclasses.replace(d), metadata=meta)
    return field(default=default, metadata=meta)


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
        return isinstance(value, (int, float)) and not isinstance(value, bool)
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
    def from_dict(cls, data: dict[str, Any] | None, _prefix: str = "") -> Any:
        """Build from a plain dict, rejecting unknown keys (with a suggestion) and wrong types."""
        if data is not None and not isinstance(data, dict):
            where = f"section {_prefix[:-1]!r}" if _prefix else "a config"
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
        data = dict(data or {})
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in data.items():
            full = f"{_prefix}{key}"
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {_prefix + close[0]!r}?" if close else f"; known keys: {names}"
                raise ConfigError(f"unknown config key {full!r}{hint}")
            tp = hints[key]
            if dataclasses.is_dataclass(tp) and isinstance(value, dict):
                value = tp.from_dict(value, _prefix=f"{full}.")
            elif isinstance(value, str) and _accepts_float(tp) and _FLOAT_RE.fullmatch(value.strip()):
                # YAML 1.1 reads `learning_rate: 3e-4` as the string "3e-4"; the user means a number.
                value = float(value)
            elif not _type_ok(value, tp):
                raise ConfigError(
                    f"{full}={value!r} has type {type(value).__name__}; expected {_type_name(tp)}"
                )
            elif _accepts_float(tp):
                value = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if isinstance(value, tuple):
                value = list(value)
            kwargs[key] = value
        obj = cls(**kwargs)
        obj.validate()
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe)."""
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (re-loadable with ``load_yaml`` or ``--config``)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Any:
        """Read a YAML file (a missing file or bad YAML raises ConfigError), apply overrides."""
        return cls.from_dict(apply_overrides(read_yaml_mapping(path), overrides or []))

    def replace(self, **changes: Any) -> Any:
        """A validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Check allowed values; subclasses extend. Base: every ``choices`` field holds a listed value."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not allowed; choose one of {list(choices)}")
            # NaN passes no comparison-based rule by accident, and Inf turns every update into NaN.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} is not allowed; must be a finite number")
            if isinstance(value, ConfigBase):
                value.validate()


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; ConfigError for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (``1e-3`` -> float, ``[64,64]`` -> list, ``null``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-3" as a string; accept it as a float like a user means it.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict (copy); a malformed one raises ConfigError."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. learning_rate=1e-3)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(text.strip())
    return data


def check(cond: bool, key: str, value: Any, rule: str) -> None:
    """Raise ``ConfigError('key=value ...; rule')`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}={value!r} is not allowed; {rule}")


__all__ = ["ConfigBase", "ConfigError", "apply_overrides", "check", "dataclass", "option", "parse_value"]


def markdown_table(cls: type[ConfigBase]) -> str:
    """The config keys of ``cls`` as a Markdown table (README's config reference is made from it)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, help_ in cls.fields_help():
        tp = tp.replace("|", "\\|")  # "float | None" must not split the Markdown row
        rows.append(f"| `{key}` | {tp} | `{default!r}` | {help_} |")
    return "\n".join(rows)
