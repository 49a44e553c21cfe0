"""``PPO.predict``'s work: observations exactly as the env gives them in, actions as the env takes
them out (SB3's ``predict``; sb3-contrib's recurrent state and action masks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ppokit.errors import EnvError
from ppokit.rl.masking import mask_nvec, validate_masks

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO


@torch.no_grad()
def predict_actions(
    ppo: PPO,
    obs: Any,
    state: np.ndarray | None,
    episode_start: np.ndarray | None,
    deterministic: bool,
    action_masks: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(action, state)``; see ``PPO.predict``."""
    batch, single = encode_for_predict(ppo, obs)
    if ppo.obs_norm is not None:
        batch = ppo.obs_norm(batch, update=False)
    as_tensor = lambda x, dtype=None: torch.as_tensor(np.asarray(x), dtype=dtype, device=ppo.device)  # noqa: E731
    n, kw = batch.shape[0], {}
    x = as_tensor(batch, ppo.obs_layout.dtype)
    if action_masks is not None:
        nvec = mask_nvec(ppo.action_space)
        kw["mask"] = as_tensor(validate_masks(action_masks, nvec, n, "observation"), torch.bool)
    if ppo.recurrent:
        kw["state"] = None if state is None else as_tensor(state, torch.float32).reshape(n, -1)
        kw["episode_start"] = None if episode_start is None else as_tensor(episode_start, torch.bool)
        action, _, _, new_state = ppo.policy.act(x, deterministic=deterministic, **kw)
        state = new_state.cpu().numpy()
    else:
        action, _, _ = ppo.policy.act(x, deterministic=deterministic, **kw)
        state = None
    action = ppo.policy.dist.to_env(action.cpu().numpy())
    return (action[0] if single else action), state


def encode_for_predict(ppo: PPO, obs: Any) -> tuple[np.ndarray, bool]:
    """``(observations encoded as the rollout stores them [n, ...], whether obs was a single one)``."""
    layout = ppo.obs_layout
    wrapped = f" (after env_wrappers {ppo.config.env_wrappers})" if ppo.config.env_wrappers else ""
    try:
        single = layout.is_single(obs)
        batch = layout.encode(layout.batch_of_one(obs) if single else obs)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise EnvError(
            f"predict got an observation that does not fit the model's observation space "
            f"{ppo.observation_space}{wrapped}: {type(e).__name__}: {e}; pass observations as that "
            "env gives them (ppokit reads Dict, Tuple and Discrete observations without flattening)"
        ) from None
    if tuple(batch.shape[1:]) != tuple(layout.shape):  # issue 30: was a raw matmul shape error
        raise EnvError(
            f"predict got an observation of shape {np.shape(obs)}; the model expects {tuple(layout.shape)} "
            f"(one observation) or [n, {', '.join(map(str, layout.shape))}] (a batch), as its observation "
            f"space {ppo.observation_space}{wrapped} gives them"
        )
    return batch, single
