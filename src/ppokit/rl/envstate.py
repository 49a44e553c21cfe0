"""Saving and restoring the state of vector environments, where that can be done exactly.

Gymnasium has no API to save an environment, so ppokit captures state that is *plain data*: the
attributes of the vector env and, for a ``SyncVectorEnv``, of every sub-environment and each of its
wrappers, when every attribute is a numpy array, a number, a string, None, a numpy random
``Generator`` (its bit-generator state) or a list/tuple/dict of those. Spaces, specs, metadata and
the links between wrappers are structure, rebuilt by constructing the env again, and are skipped.

This covers the numpy-vectorised CartPole and the classic-control environments (Pendulum, Acrobot,
MountainCar, ...) under sync vectorization. It does not cover environments whose state lives
elsewhere: MuJoCo (the physics is in ``MjData``), async vector envs (the state is in worker
processes), anything holding file handles, simulators or other objects. ``capture`` then returns
None and the reason; a resumed run re-seeds and resets those environments (see ``PPO.resume``).
"""

from __future__ import annotations

import enum
from typing import Any

import gymnasium as gym
import numpy as np
import torch

# Attributes that are structure (rebuilt when the env is constructed again), not state.
_STRUCTURE = {"env", "envs", "env_fns", "spec", "_cached_spec", "metadata", "_metadata", "_saved_kwargs"}
_STRUCTURE_TYPES = (gym.Space, gym.envs.registration.EnvSpec, enum.Enum, gym.Env, gym.vector.VectorEnv)
_TENSOR_DTYPES = {np.dtype(t) for t in ("bool", "uint8", "int8", "int16", "int32", "int64")} | {
    np.dtype(t) for t in ("float16", "float32", "float64")
}


class NotCapturable(Exception):
    """An attribute holds something that cannot be saved as plain data."""


def _layers(venv: gym.vector.VectorEnv) -> list[Any]:
    """Every object whose attributes make up the env state: wrapper chains, sub-envs included."""
    if isinstance(venv, gym.vector.AsyncVectorEnv):
        raise NotCapturable("an async vector env keeps its environments in worker processes")
    if getattr(venv, "state_not_capturable", None):  # says where its state lives (rl/envpool_backend.py)
        raise NotCapturable(venv.state_not_capturable)
    chain, layer = [], venv
    while layer is not None:
        chain.append(layer)
        layer = getattr(layer, "env", None) if isinstance(layer, gym.vector.VectorWrapper) else None
    for sub in getattr(chain[-1], "envs", []):
        while sub is not None:
            chain.append(sub)
            sub = getattr(sub, "env", None) if isinstance(sub, gym.Wrapper) else None
    return chain


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype not in _TENSOR_DTYPES:
            raise NotCapturable(f"{key} is an array of dtype {value.dtype}")
        tensors[key] = torch.from_numpy(np.array(value, copy=True))
        return {"__array__": key}
    if isinstance(value, np.generic):
        return {"__scalar__": value.dtype.str, "value": value.item()}
    if isinstance(value, np.random.Generator):
        return {"__rng__": value.bit_generator.state}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}}
    raise NotCapturable(f"{key} holds a {type(value).__module__}.{type(value).__qualname__}")


def _decode(tree: Any, tensors: dict[str, torch.Tensor], current: Any = None) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__array__" in tree:
        return tensors[tree["__array__"]].numpy().copy()
    if "__scalar__" in tree:
        return np.dtype(tree["__scalar__"]).type(tree["value"])
    if "__rng__" in tree:
        # Set the state in place: wrappers and spaces may share the same Generator object.
        rng = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        if type(rng.bit_generator).__name__ != tree["__rng__"]["bit_generator"]:
            rng = np.random.Generator(getattr(np.random, tree["__rng__"]["bit_generator"])())
        rng.bit_generator.state = tree["__rng__"]
        return rng
    if "__tuple__" in tree:
        return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    return {k: _decode(v, tensors) for k, v in tree["__dict__"].items()}


def _is_structure(name: str, value: Any) -> bool:
    return name in _STRUCTURE or isinstance(value, _STRUCTURE_TYPES) or callable(value)


def capture(venv: gym.vector.VectorEnv, prefix: str = "env.") -> tuple[dict, dict | None, str | None]:
    """``(tensors, json_tree, None)`` holding the env state, or ``({}, None, reason)`` when some
    attribute is not plain data (the reason names it)."""
    tensors: dict[str, torch.Tensor] = {}
    try:
        layers = _layers(venv)
        tree = []
        for i, layer in enumerate(layers):
            attrs = {}
            for name, value in vars(layer).items():
                if not _is_structure(name, value):
                    try:
                        attrs[name] = _encode(value, f"{prefix}{i}.{name}", tensors)
                    except NotCapturable as e:
                        where = str(e).removeprefix(f"{prefix}{i}.")
                        raise NotCapturable(f"{type(layer).__name__}.{where}") from None
            tree.append({"type": type(layer).__qualname__, "attrs": attrs})
    except NotCapturable as e:
        return {}, None, str(e)
    return tensors, {"layers": tree}, None


def restore(venv: gym.vector.VectorEnv, tensors: dict[str, torch.Tensor], tree: dict) -> str | None:
    """Put a captured state back into ``venv`` (built the same way); None, or why it could not."""
    try:
        layers = _layers(venv)
    except NotCapturable as e:
        return str(e)
    saved = tree["layers"]
    if [type(x).__qualname__ for x in layers] != [x["type"] for x in saved]:
        return "the environment's wrappers differ from the checkpoint's"
    for layer, entry in zip(layers, saved):
        attrs = vars(layer)
        for name, value in entry["attrs"].items():
            attrs[name] = _decode(value, tensors, attrs.get(name))
    return None
