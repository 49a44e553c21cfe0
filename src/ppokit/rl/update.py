"""The PPO update and the loss, as functions of explicit inputs.

- ``rollout_batch``: GAE over the ``[T, N]`` rollout, then the valid transitions flattened to ``[B]``.
- ``ppo_loss``: THE loss, ``policy - ent_coef * entropy + vf_coef * value`` on one minibatch, with its
  separate terms and detached diagnostics. ``PPO.loss`` calls it and is the documented override point.
- ``ppo_update``: epochs of minibatch gradient steps through one ``GuardedStep`` (train/step.py), with
  SB3's target-KL early stop.
- ``make_optimizers``: FlatAdam where the fast path runs (``rl/fast/optim.py``), ``torch.optim.Adam``
  for every other policy.
- ``AdaptiveKL``: the KL coefficient, adapted once per update for ``objective: kl_adaptive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ppokit import distributed
from ppokit.errors import CheckpointError
from ppokit.functional import (
    adaptive_beta,
    approx_kl,
    clip_fraction,
    gae,
    policy_loss,
    value_loss,
)
from ppokit.rl.fast.optim import FlatAdam, is_flat_state, per_param_from_flat
from ppokit.rl.policy import Policy
from ppokit.rl.recurrent import evaluate_batch
from ppokit.rl.rollout import RolloutBuffer
from ppokit.train.step import GuardedStep

LossAndBackward = Callable[
    [dict[str, torch.Tensor], float], tuple[torch.Tensor, dict[str, torch.Tensor], Callable[[], None]]
]


def rollout_batch(buf: RolloutBuffer, gamma: float, gae_lambda: float, device: torch.device) -> dict:
    """GAE over ``[T, N]`` (truncations bootstrap, terminations do not), then the valid transitions
    flattened to ``[B]`` for minibatching."""
    buf = buf.to(device)
    advantages, returns = gae(
        buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done, gamma=gamma, gae_lambda=gae_lambda
    )
    valid = buf.valid.reshape(-1)
    flat = lambda x: x.reshape(-1, *x.shape[2:])[valid]
    data = {
        "obs": flat(buf.obs),
        "actions": flat(buf.actions),
        "logp_old": flat(buf.logp),
        "values_old": flat(buf.values),
        "advantages": flat(advantages),
        "returns": flat(returns),
    }
    if buf.masks is not None:  # the masks used at collection time, reused by the loss
        data["masks"] = flat(buf.masks)
    return data


def normalize_advantages(adv: torch.Tensor) -> torch.Tensor:
    """Per-minibatch normalisation; with several ranks, over the union of their minibatches
    (``distributed.whiten``, the one the RLHF trainer uses too)."""
    return distributed.whiten(adv)


def ppo_loss(
    policy: Policy, mb: dict[str, torch.Tensor], clip_range: float, kl_coef: float, cfg: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss on one minibatch: ``policy - ent_coef * entropy + vf_coef * value`` (autograd).

    Returns the scalar loss and detached terms/diagnostics. The minus sign on the entropy makes the
    bonus *raise* entropy when the loss is minimised (some tutorials add it, which lowers entropy).
    A minibatch of env sequences (recurrent policies) is re-run and flattened to its valid steps first.
    """
    logp, entropy, values, mb = evaluate_batch(policy, mb)
    # under bf16 autocast (config bf16) the network's outputs are bfloat16: the loss is float32
    logp, entropy, values = logp.float(), entropy.float(), values.float()
    adv = normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
    pg, ratio, kl = policy_loss(logp, mb["logp_old"], adv, cfg.objective, clip_range, kl_coef)
    vf, vf_clipped = value_loss(
        values, mb["returns"], mb["values_old"], cfg.vf_clip_range, cfg.value_loss, cfg.huber_delta
    )
    pg, vf, ent = pg.mean(), vf.mean(), entropy.mean()
    total = pg - cfg.ent_coef * ent + cfg.vf_coef * vf
    terms = {
        "policy_loss": pg,
        "value_loss": vf,
        "entropy": ent,
        "loss": total,
        "kl": kl.mean(),
        "approx_kl": approx_kl(logp.detach(), mb["logp_old"]),
        "clip_fraction": clip_fraction(ratio.detach(), clip_range),
        "value_clipped_fraction": vf_clipped.float().mean(),
        "ratio_mean": ratio.mean(),
    }
    return total, {k: v.detach() for k, v in terms.items()}


def ppo_update(
    data: dict[str, torch.Tensor],
    loss_and_backward: LossAndBackward,
    guard: GuardedStep,
    clip_range: float,
    n_epochs: int,
    n_minibatches: int,
    target_kl: float | None,
) -> dict[str, float]:
    """Epochs of minibatch gradient steps on one rollout (the update); returns the mean loss terms
    over the steps taken (NaN when none was), the step count and whether target-KL stopped it."""
    dist = distributed.info()
    n = data["obs"].shape[0]
    sums: dict[str, float] = {}
    keys: list[str] = []  # the loss terms, logged even when no step was taken
    count, stop = 0, False
    for _epoch in range(n_epochs):
        # One minibatch per epoch (the zoo's CartPole settings) is the whole rollout: its order
        # does not change the gradient, so it is used as it is, without a permuted copy.
        perm = torch.randperm(n, device=data["obs"].device) if n_minibatches > 1 else None
        for idx in torch.tensor_split(perm, n_minibatches) if perm is not None else [None]:
            if idx is not None and idx.numel() == 0 and not dist.enabled:
                continue  # with several ranks an empty share still takes part in the collectives
            mb = {k: v[idx] for k, v in data.items()} if idx is not None else data
            loss, terms, backward = loss_and_backward(mb, clip_range)
            keys = list(terms)
            # Target-KL early stop, checked before this minibatch's step (SB3's 1.5 * target_kl rule).
            if target_kl is not None:
                kl_now = (
                    distributed.all_reduce_mean(terms["approx_kl"]) if dist.enabled else terms["approx_kl"]
                )
                if kl_now > 1.5 * target_kl:
                    stop = True
                    break
            if not guard.step(_closure(loss, backward)):
                continue  # a skipped step: its non-finite terms stay out of the averages
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        if stop:
            break
    # the logged losses are the mean over ranks (every rank has the same keys: they step together)
    means = {f"train/{k}": sums[k] / count if count else math.nan for k in keys}
    metrics = distributed.aggregate_metrics(means)
    metrics.update({"train/minibatch_steps": count, "train/early_stopped": float(stop)})
    return metrics


def _closure(loss: torch.Tensor, backward: Callable[[], None]) -> Callable[[], torch.Tensor]:
    """The guarded step's closure for a loss computed before the step (the target-KL check needs
    its terms first): run ``backward``, return the loss."""

    def closure() -> torch.Tensor:
        backward()
        return loss

    return closure


class PolicyAdam(torch.optim.Adam):
    """``torch.optim.Adam`` for the autograd policies. Its ``load_state_dict`` also reads FlatAdam's
    layout (checkpoints written before FlatAdam was kept to the fast path: the flat moments are the
    parameters' concatenation, so they split exactly) and refuses a state that does not fit with a
    CheckpointError."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``torch.optim.Adam`` or FlatAdam state of these parameters."""
        if is_flat_state(state_dict):
            params = [p for group in self.param_groups for p in group["params"]]
            state_dict = per_param_from_flat(state_dict, params)
            # the saved group has FlatAdam's keys only: keep this optimizer's other settings
            state_dict["param_groups"] = [
                {**{k: v for k, v in self.param_groups[0].items() if k != "params"}, **g}
                for g in state_dict["param_groups"]
            ]
        try:
            super().load_state_dict(state_dict)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"optimizer state does not fit this policy: {e!r}") from None


def make_optimizers(policy: Policy, cfg: Any, flat: bool = False) -> list[Any]:
    """One Adam over all parameters, or (``separate_optimizers``) one for the actor and one for the
    critic. ``flat`` (the fast path runs): FlatAdam, whose flat gradient the hand-written backward
    writes into (``rl/fast/optim.py`` says why it is faster there); otherwise ``torch.optim.Adam``."""
    kw: dict[str, Any] = {"betas": tuple(cfg.adam_betas), "eps": cfg.adam_eps}
    make: Any = FlatAdam
    if not flat:
        make = PolicyAdam
        # fused: one kernel per step instead of a dozen ops per parameter tensor. Measured (issue 29,
        # 2-core CPU, CartPole MLP with manual_grad=false, CPU time per minibatch step): fused 2.37 ms,
        # foreach 2.82, for-loop 2.82, FlatAdam 2.08. Float parameters on CPU/CUDA only.
        params = list(policy.parameters())
        kw["fused"] = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if not cfg.separate_optimizers:
        return [make(list(policy.parameters()), lr=cfg.learning_rate, **kw)]
    critic_lr = cfg.critic_learning_rate or cfg.learning_rate
    return [
        make(policy.actor_parameters(), lr=cfg.learning_rate, **kw),
        make(policy.critic_parameters(), lr=critic_lr, **kw),
    ]


class AdaptiveKL:
    """The KL coefficient; for ``kl_adaptive`` halved or doubled once per update towards d_targ
    (PPO paper, section 4). A part with its own state, saved in checkpoints."""

    def __init__(self, coef: float, target: float, adaptive: bool):
        self.coef, self.target, self.adaptive = float(coef), float(target), adaptive

    @torch.no_grad()
    def update(self, policy: Policy, data: dict[str, torch.Tensor]) -> None:
        """Adapt to the mean KL(pi_old || pi_new) over the whole rollout (all ranks)."""
        if not self.adaptive:
            return
        logp, _, _, old = evaluate_batch(policy, data)  # old: the rollout's data, pi_old's log-probs
        kl = float(distributed.all_reduce_mean(approx_kl(logp, old["logp_old"])))
        self.coef = adaptive_beta(self.coef, kl, self.target)

    def state_dict(self) -> dict[str, float]:
        """The current coefficient."""
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``state_dict``."""
        self.coef = float(state["coef"])
