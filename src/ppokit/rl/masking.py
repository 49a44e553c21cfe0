"""Invalid-action masking: where masks come from, and the masked categorical maths.

A mask says which actions are valid for the current observation: ``True`` = allowed. Its layout is
sb3-contrib's (``MaskablePPO``): one flat boolean vector per env, the concatenation of one row per
sub-action, so ``n`` entries for ``Discrete(n)``, ``sum(nvec)`` for ``MultiDiscrete(nvec)`` and ``2 * n``
for ``MultiBinary(n)`` (each bit's ``[0 allowed, 1 allowed]``).

Environments give masks in three common conventions, looked up in this order (``MaskSource``):

1. an ``action_masks()`` method (sb3-contrib's ``ActionMasker`` wrapper), called on every sub-env
   through the vector env (``call``), or on the vector env itself when it defines one;
2. ``info["action_mask"]`` from ``reset`` and ``step``;
3. an ``action_mask`` key of a Dict observation (PettingZoo-style and many board-game envs).
   ``StripMaskKey`` (applied by ``make_vec_env``) moves that key into ``info["action_mask"]``, so the
   network never sees it; ``{"observation": x, "action_mask": m}`` becomes the plain ``x``.

The maths: masked logits are set to ``-inf`` before the softmax, so a masked action's probability is
exactly 0 (its Gumbel-max score stays ``-inf`` and it is never sampled), and the entropy sums over the
valid actions only (``0 * log 0`` is taken as 0 without producing NaN in the value or the gradient).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit.errors import EnvConfigError, EnvStepError

MASK_KEY = "action_mask"
MODES = ("auto", "true", "false")


def mask_nvec(action_space: gym.Space) -> list[int] | None:
    """The widths of the mask's per-sub-action rows (``[n]``, ``nvec``, ``[2] * n`` for MultiBinary),
    or None when masking does not apply (Box)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(action_space.nvec).ravel()]
    if isinstance(action_space, gym.spaces.MultiBinary):
        return [2] * int(np.prod(action_space.shape))
    return None


def mask_dim(action_space: gym.Space) -> int | None:
    """The flat mask width for ``action_space``, or None when masking does not apply (Box)."""
    nvec = mask_nvec(action_space)
    return None if nvec is None else int(sum(nvec))


# -- the maths ------------------------------------------------------------------------------------
def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``log_softmax`` over the allowed entries; masked entries are exactly ``-inf``."""
    if mask is None:
        return torch.log_softmax(logits, dim=-1)
    return torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def masked_entropy(log_probs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Entropy ``[...]`` of ``log_probs [..., K]`` (from ``masked_log_softmax``) over the allowed
    actions; the masked ones (p = 0) add nothing, and no ``0 * -inf`` NaN reaches the gradient."""
    if mask is None:
        return -(log_probs.exp() * log_probs).sum(-1)
    return -(log_probs.exp() * log_probs.masked_fill(~mask, 0.0)).sum(-1)


def masked_binary(
    out: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor | None = None, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked independent Bernoullis (MultiBinary): ``(actions [B, n] float, logp [B], entropy [B])``
    for logits ``out [B, n]`` and a mask ``[B, 2n]`` (each bit's ``[0 allowed, 1 allowed]``). Each bit is
    the categorical over {0, 1} with logits ``[0, out]`` (the same distribution: p(1) = sigmoid(out)),
    masked as any categorical, so a forced bit has probability exactly 1 and adds no entropy. Given
    ``actions`` they are scored; else sampled (Gumbel-max) or, ``deterministic``, the mode."""
    B, n = out.shape
    m = mask.reshape(B, n, 2).bool()
    log_probs = masked_log_softmax(torch.stack([torch.zeros_like(out), out], -1), m)
    if actions is None:
        score = log_probs
        if not deterministic:
            score = log_probs - torch.rand_like(log_probs).clamp_(1e-20, 1.0).log_().neg_().log_()
        actions = score.argmax(-1).float()
    logp = log_probs.gather(-1, actions.long().reshape(B, n, 1)).squeeze(-1).sum(-1)
    return actions, logp, masked_entropy(log_probs, m).sum(-1)


def check_rows(mask: np.ndarray, what: str, step: int | None = None) -> None:
    """Raise EnvStepError naming the env (row) and step when a row (or a sub-action's part of it)
    allows no action: there is nothing to sample from."""
    empty = ~mask.any(-1)
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        at = f" at step {step}" if step is not None else ""
        raise EnvStepError(f"{what} {row} gave an action mask with no valid action{at}: {mask[row].tolist()}")


def split_for_check(mask: np.ndarray, nvec: list[int]) -> np.ndarray | list[np.ndarray]:
    """The mask as one ``[N, n]`` block per sub-action (for ``check_rows``)."""
    return np.split(mask, np.cumsum(nvec)[:-1], axis=-1) if len(nvec) > 1 else [mask]


def validate_masks(mask: Any, nvec: list[int], n: int, what: str = "environment", step: int | None = None):
    """``mask`` as a boolean ``[n, sum(nvec)]`` array; a wrong shape or an empty row is an error
    naming the env (row) and step."""
    arr = np.asarray(mask)
    width = int(sum(nvec))
    if arr.ndim == 1 and n == 1:
        arr = arr[None]
    if arr.shape != (n, width):
        raise EnvConfigError(
            f"the action mask has shape {arr.shape[1:] if arr.ndim > 1 else arr.shape}, expected ({width},) "
            f"per {what} (one flag per action, sub-actions concatenated, as sb3-contrib's MaskablePPO)"
        )
    arr = arr.astype(bool, copy=False)
    for part in split_for_check(arr, nvec):
        check_rows(part, what, step)
    return arr


# -- where masks come from ------------------------------------------------------------------------
def _sub_env_caller(venv: gym.vector.VectorEnv) -> Any:
    base = venv.unwrapped
    return base if hasattr(base, "call") else None


class MaskSource:
    """Reads the current action masks of a vector env, in one of the conventions of the module
    docstring (``kind``: ``method`` or ``info``)."""

    def __init__(self, venv: gym.vector.VectorEnv, kind: str, nvec: list[int]):
        self.venv, self.kind, self.nvec = venv, kind, nvec
        self.num_envs = venv.num_envs

    @classmethod
    def detect(
        cls, venv: gym.vector.VectorEnv, reset_info: dict, nvec: list[int] | None, mode: str, label: str
    ) -> MaskSource | None:
        """The env's mask source, or None. ``mode``: ``auto`` uses masks when the env gives them,
        ``true`` requires them, ``false`` ignores them. ``nvec`` is None for action spaces masking does
        not apply to (Box)."""
        if mode not in MODES:
            raise EnvConfigError(f"action_masking={mode!r} is not allowed; choose one of {list(MODES)}")
        if mode == "false":
            return None
        kind = None
        caller = _sub_env_caller(venv)
        if hasattr(venv, "action_masks") or (
            caller is not None and all(caller.call("has_wrapper_attr", "action_masks"))
        ):
            kind = "method"
        elif MASK_KEY in reset_info:
            kind = "info"
        if kind is not None and nvec is None:
            raise EnvConfigError(
                f"{label} gives action masks, but its action space {venv.single_action_space} has no "
                "discrete actions to mask; set action_masking=false"
            )
        if kind is None:
            if mode == "true":
                raise EnvConfigError(
                    f"action_masking=true is not allowed for {label}: it gives no action masks (looked for "
                    f"an action_masks() method, info['{MASK_KEY}'] and a Dict observation key '{MASK_KEY}')"
                )
            return None
        return cls(venv, kind, nvec)

    def read(self, info: dict, step: int | None = None, ignore: np.ndarray | None = None) -> np.ndarray:
        """The masks ``[N, sum(nvec)]`` for the observations just returned (with ``info``). Rows in
        ``ignore`` (NEXT_STEP: the last observation of an ended episode, whose action the env ignores
        and which may allow nothing, as a finished board game) are taken as all-allowed."""
        if self.kind == "method":
            raw = (
                self.venv.action_masks()
                if hasattr(self.venv, "action_masks")
                else np.stack([np.asarray(m) for m in _sub_env_caller(self.venv).call("action_masks")])
            )
        else:
            have = info.get(f"_{MASK_KEY}")
            if MASK_KEY not in info or (have is not None and not np.all(have)):
                missing = 0 if have is None else int(np.flatnonzero(~np.asarray(have))[0])
                at = f" at step {step}" if step is not None else ""
                raise EnvStepError(f"environment {missing} returned no info['{MASK_KEY}']{at}")
            raw = info[MASK_KEY]
        if ignore is not None and ignore.any():
            raw = np.array(raw, dtype=bool).reshape(self.num_envs, -1)
            raw[ignore] = True
        return validate_masks(raw, self.nvec, self.num_envs, "environment", step)


# -- Dict observations with an action_mask key --------------------------------------------------
class StripMaskKey(gym.vector.VectorWrapper):
    """Moves the ``action_mask`` entry of Dict observations into ``info["action_mask"]``; a Dict left
    with the single key ``observation`` (the PettingZoo convention) becomes that space itself."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        rest = {k: s for k, s in env.single_observation_space.spaces.items() if k != MASK_KEY}
        self.unwrap = list(rest) == ["observation"]
        single = rest["observation"] if self.unwrap else gym.spaces.Dict(rest)
        self.single_observation_space = single
        self.observation_space = gym.vector.utils.batch_space(single, env.num_envs)

    def _strip(self, obs: dict) -> Any:
        return obs["observation"] if self.unwrap else {k: v for k, v in obs.items() if k != MASK_KEY}

    def _split(self, obs: dict, info: dict) -> tuple[Any, dict]:
        info = dict(info)
        info[MASK_KEY] = np.asarray(obs[MASK_KEY]).astype(bool)
        info[f"_{MASK_KEY}"] = np.ones(self.num_envs, dtype=bool)
        if "final_obs" in info:  # SAME_STEP: the real last observations of finished episodes
            final = np.empty(len(info["final_obs"]), dtype=object)
            for i, o in enumerate(info["final_obs"]):
                final[i] = self._strip(o) if isinstance(o, dict) else o
            info["final_obs"] = final
        return self._strip(obs), info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:  # noqa: D102
        return self._split(*self.env.reset(**kwargs))

    def step(self, actions: Any) -> tuple:  # noqa: D102
        obs, reward, terminated, truncated, info = self.env.step(actions)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info


def strip_mask_key(venv: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """``venv`` wrapped in ``StripMaskKey`` when its observations are a Dict with an ``action_mask``."""
    space = venv.single_observation_space
    if isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces:
        return StripMaskKey(venv)
    return venv
