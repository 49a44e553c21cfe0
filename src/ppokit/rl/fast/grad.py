"""The PPO loss's gradient written out by hand, for the fast path's gradient steps.

Why: with small MLPs on a CPU, a gradient step is bound by per-op bookkeeping, not arithmetic.
Through autograd a 64-64 actor-critic step at batch 256 cost ~1 ms on the 2-core dev machine
(profile and micro-measurements: docs/benchmarks_presets.md); rl-zoo's CartPole settings take 20 such steps
per 256 env steps, so the update was 80% of the run. Autograd is general; these two are the same
derivatives for the one graph PPO has, in ~5x fewer tensor ops:

- ``loss_and_grads``: the loss of ``PPO.loss`` (same terms, same values) and its gradient with respect
  to the network outputs: logits or Gaussian mean, value, log-std.
- ``ManualGrad``: the MLPs' backward (their forward, keeping activations, is ``MlpActorCritic.infer``),
  a dozen matrix products written straight into the optimizer's flat gradient (``out=`` views).
  For a layer ``h = act(z)``, ``z = x W^T + b`` and upstream ``dh``: ``dz = dh * act'(z)``,
  ``dW = dz^T x``, ``db = sum dz``, ``dx = dz W``, with act' from the output: tanh' = 1 - h^2,
  relu' = [h > 0], elu' = h + 1 where h <= 0.

``PPO.loss`` (autograd) is the definition; ``manual_grad: false`` uses it throughout, and
tests/test_rl_manual_grad.py checks loss, terms and every parameter gradient against it for every
objective, value loss, value clipping, entropy bonus, action space and network shape. Every dispatch
below names each supported choice and raises on anything else; which choices those are is
``rl/fast/__init__.py``'s capability check, which refuses the fast path before it could run.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ppokit.functional import clip_fraction, clipped_surrogate, kl_k3, value_loss
from ppokit.rl.config import PPOConfig
from ppokit.rl.networks import MlpActorCritic

_LOG_2PI = math.log(2 * math.pi)


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Sum of the per-sub-action terms (no op for a single Discrete action)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1).sum(-1, keepdim=True)


Layer = tuple[nn.Parameter, nn.Parameter]  # (weight [out, in], bias [out])


class ManualGrad:
    """The backward through the actor-critic's MLPs; the forward is ``MlpActorCritic.infer``."""

    def __init__(self, policy: MlpActorCritic):
        self.policy = policy
        self.activation = policy.cfg.activation
        self.trunk = policy.linears("trunk")
        self.actor_body = policy.linears("actor")
        self.critic_body = policy.linears("critic")
        self.actor_head: Layer = (policy.actor_head.weight, policy.actor_head.bias)
        self.critic_head: Layer = (policy.critic_head.weight, policy.critic_head.bias)

    # -- backward ------------------------------------------------------------------------------
    def _act_grad(self, dh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``dz = dh * act'(z)`` from the activation's output ``h``."""
        if self.activation == "tanh":
            return torch.addcmul(dh, dh, h * h, value=-1.0)  # dh * (1 - h^2)
        if self.activation == "relu":
            return dh * (h > 0)
        if self.activation == "elu":  # elu' = 1 for z > 0, exp(z) = h + 1 for z <= 0
            # autograd's own fused kernel, from the output (is_result): the same values as
            # dh * (h.clamp(max=0) + 1) in one pass instead of three; that was ~12x slower at [4096, 64]
            # and as long as the update's matrix products (issue 32's profile, docs/benchmarks_batched.md)
            return torch.ops.aten.elu_backward(dh, 1.0, 1, 1, True, h)
        raise AssertionError(f"unreachable: activation {self.activation!r} has no hand-written gradient")

    @staticmethod
    def _linear_grad(dz: torch.Tensor, x: torch.Tensor, layer: Layer, need_dx: bool) -> torch.Tensor | None:
        w, b = layer
        torch.mm(dz.t(), x, out=w.grad)
        torch.sum(dz, 0, out=b.grad)
        return torch.mm(dz, w) if need_dx else None

    def _body_grad(self, dh: torch.Tensor, hs: list[torch.Tensor], layers: list[Layer]) -> None:
        for i in range(len(layers) - 1, -1, -1):
            dz = self._act_grad(dh, hs[i + 1])
            dh = self._linear_grad(dz, hs[i], layers[i], need_dx=i > 0)

    @torch.no_grad()
    def backward(self, saved: dict, d_out: torch.Tensor, d_value: torch.Tensor) -> None:
        """Write the gradients of the loss into every network parameter's ``.grad`` (overwriting),
        given the loss's gradients with respect to the policy output ``[B, out]`` and value ``[B]``."""
        d_value = d_value.unsqueeze(-1)
        if self.trunk:
            h = saved["trunk"][-1]
            dh = self._linear_grad(d_out, h, self.actor_head, True)
            dh += self._linear_grad(d_value, h, self.critic_head, True)
            self._body_grad(dh, saved["trunk"], self.trunk)
            return
        ha, hc = saved["actor"], saved["critic"]
        dha = self._linear_grad(d_out, ha[-1], self.actor_head, bool(self.actor_body))
        dhc = self._linear_grad(d_value, hc[-1], self.critic_head, bool(self.critic_body))
        self._body_grad(dha, ha, self.actor_body)
        self._body_grad(dhc, hc, self.critic_body)


@torch.no_grad()
def loss_and_grads(
    policy: MlpActorCritic,
    cfg: PPOConfig,
    mb: dict[str, torch.Tensor],
    adv: torch.Tensor,
    out: torch.Tensor,
    values: torch.Tensor,
    clip_range: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``PPO.loss``'s loss and terms, plus its gradients ``{"out", "value", "log_std"}`` (log-std only
    for Gaussian policies) for the (already normalised) advantages ``adv``."""
    n = out.shape[0]
    grads: dict[str, torch.Tensor] = {}
    # -- log pi(a|s) and entropy, keeping what their derivatives need ------------------------------
    if policy.kind in ("box", "squashed_box"):
        log_std = policy.log_std()
        inv_std = torch.exp(-log_std)
        z = (mb["actions"] - out) * inv_std
        logp = (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)
        if policy.kind == "squashed_box":  # the tanh correction depends on the stored sample alone:
            logp = logp - policy.dist._squash_correction(mb["actions"])  # no gradient (issue 33)
        entropy = (log_std + 0.5 * (1.0 + _LOG_2PI)).sum()  # the same for every sample
    elif policy.kind == "multibinary":  # independent Bernoullis with logits ``out`` (issue 33)
        actions = mb["actions"]
        sp_pos = torch.nn.functional.softplus(out)
        probs = torch.sigmoid(out)
        logp = (actions * out - sp_pos).sum(-1)
        # H = p softplus(-x) + (1 - p) softplus(x), as ActionDistribution.log_prob_entropy computes it
        entropy = (probs * torch.nn.functional.softplus(-out) + (1.0 - probs) * sp_pos).sum(-1).mean()
    elif policy.kind in ("discrete", "multidiscrete"):
        actions = mb["actions"].long().view(n, -1)
        parts = list(torch.split(out, policy.dist.nvec, dim=-1))
        log_probs = [torch.log_softmax(x, -1) for x in parts]
        probs = [lp.exp() for lp in log_probs]
        logp = _sum([lp.gather(-1, actions[:, i : i + 1]) for i, lp in enumerate(log_probs)]).squeeze(-1)
        ent_parts = [-(p * lp).sum(-1, keepdim=True) for p, lp in zip(probs, log_probs)]
        entropy = _sum(ent_parts).mean()
    else:
        raise AssertionError(f"unreachable: action kind {policy.kind!r} has no hand-written gradient")
    # -- the policy objective and d loss / d logp (the mean over the minibatch included) -----------
    ratio = torch.exp(logp - mb["logp_old"])
    kl = kl_k3(mb["logp_old"], logp)
    ratio_adv = ratio * adv
    if cfg.objective == "clip":
        pg, is_low, is_high = clipped_surrogate(ratio, adv, clip_range)
        # the clip removes the gradient exactly where clipped_surrogate's masks say
        d_logp = torch.where(is_low | is_high, 0.0, ratio_adv * (-1.0 / n))
    elif cfg.objective == "none":
        pg, d_logp = -ratio_adv, ratio_adv * (-1.0 / n)
    elif cfg.objective in ("kl_penalty", "kl_adaptive"):  # -(r A) + beta * k3, and d k3 / d logp = r - 1
        pg = kl_coef * kl - ratio_adv
        d_logp = (kl_coef * (ratio - 1.0) - ratio_adv) / n
    else:
        raise AssertionError(f"unreachable: objective {cfg.objective!r} has no hand-written gradient")
    # -- chain to the policy output (and the log-std) -----------------------------------------------
    if policy.kind in ("box", "squashed_box"):
        grads["out"] = d_logp.unsqueeze(-1) * z * inv_std  # d logp / d mean = z / std
        d_log_std = (d_logp.unsqueeze(-1) * (z * z - 1.0)).sum(0) - cfg.ent_coef  # entropy: d/dlog_std = 1
        raw = policy.actor_log_std
        low, high = policy.log_std_bounds
        inside = (raw >= low) & (raw <= high)  # the clamp's gradient
        grads["log_std"] = d_log_std * inside
    elif policy.kind == "multibinary":
        # d logp / d x = a - p; H = softplus(x) - p x, so d H / d x = -p (1 - p) x, and the loss has
        # -ent_coef * mean H
        d = d_logp.unsqueeze(-1) * (actions - probs)
        if cfg.ent_coef != 0.0:
            d.addcmul_(probs * (1.0 - probs), out, value=cfg.ent_coef / n)
        grads["out"] = d
    else:  # discrete kinds (the only others that reach here, see above)
        d_parts = []
        for i, (p, lp) in enumerate(zip(probs, log_probs)):
            d = p * -d_logp.unsqueeze(-1)  # d logp / d logits = onehot(a) - p
            d.scatter_add_(-1, actions[:, i : i + 1], d_logp.unsqueeze(-1))
            if cfg.ent_coef != 0.0:  # d H / d logits = -p (log p + H); the loss has -ent_coef * mean H
                d.addcmul_(p, lp + ent_parts[i], value=cfg.ent_coef / n)
            d_parts.append(d)
        grads["out"] = d_parts[0] if len(d_parts) == 1 else torch.cat(d_parts, -1)
    # -- the critic ----------------------------------------------------------------------------------
    vf, d_v, vf_clipped = _value_loss_grad(values, mb["returns"], mb["values_old"], cfg)
    grads["value"] = d_v * (cfg.vf_coef / n)
    pg_mean, vf_mean, kl_mean = pg.mean(), vf.mean(), kl.mean()
    terms = {
        "policy_loss": pg_mean,
        "value_loss": vf_mean,
        "entropy": entropy,
        "loss": pg_mean - cfg.ent_coef * entropy + cfg.vf_coef * vf_mean,
        "kl": kl_mean,
        "approx_kl": kl_mean,  # the same k3 mean, under SB3's name
        "clip_fraction": clip_fraction(ratio, clip_range),  # the one definition (functional.diagnostics)
        "value_clipped_fraction": vf_clipped.float().mean(),
        "ratio_mean": ratio.mean(),
    }
    return terms["loss"], terms, grads


def _value_loss_grad(
    values: torch.Tensor, returns: torch.Tensor, values_old: torch.Tensor, cfg: PPOConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``functional.value_loss`` (per sample, and which samples took the clipped loss) and its
    derivative in ``values``."""
    loss, use_clipped = value_loss(
        values, returns, values_old, cfg.vf_clip_range, cfg.value_loss, cfg.huber_delta
    )

    def slope(err: torch.Tensor) -> torch.Tensor:  # d loss / d prediction
        if cfg.value_loss == "mse":
            return err
        if cfg.value_loss == "huber":
            return err.clamp(-cfg.huber_delta, cfg.huber_delta)
        raise AssertionError(f"unreachable: value_loss {cfg.value_loss!r} has no hand-written gradient")

    d_values = slope(values - returns)
    if cfg.vf_clip_range is None:
        return loss, d_values, use_clipped
    delta = values - values_old
    clipped = values_old + delta.clamp(-cfg.vf_clip_range, cfg.vf_clip_range)
    d_clipped = slope(clipped - returns) * (delta.abs() <= cfg.vf_clip_range)  # the clamp's gradient
    return loss, torch.where(use_clipped, d_clipped, d_values), use_clipped
