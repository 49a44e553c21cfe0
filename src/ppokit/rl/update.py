"""The PPO update: GAE over the rollout, epochs of minibatch gradient steps, and the loss.

``PPOUpdate`` holds these methods of ``PPO`` (rl/ppo.py builds everything they use: ``config``,
``policy``, ``optimizers``, ``buffer``, ``manual_grad``, ``dist``, ``device``, ``kl_beta`` and the
counters). ``loss`` is the definition of the PPO loss (autograd); by default the gradient steps use
the same loss with its gradient written out by hand (rl/manual_grad.py, tested equal).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ppokit import distributed
from ppokit.errors import NonFiniteError
from ppokit.functional import (
    adaptive_beta,
    approx_kl,
    explained_variance,
    gae,
    normalize,
    policy_loss,
    value_loss,
)
from ppokit.optim import clip_grad_norm
from ppokit.rl.manual_grad import loss_and_grads


class PPOUpdate:
    """The update and the loss, as methods of ``PPO``."""

    def _flatten_rollout(self) -> dict[str, torch.Tensor]:
        """GAE over ``[T, N]``, then the valid transitions flattened to ``[B]`` for minibatching."""
        cfg, buf = self.config, self.buffer.to(self.device)
        advantages, returns = gae(
            buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done, cfg.gamma, cfg.gae_lambda
        )
        valid = buf.valid.reshape(-1)
        flat = lambda x: x.reshape(-1, *x.shape[2:])[valid]
        return {
            "obs": flat(buf.obs),
            "actions": flat(buf.actions),
            "logp_old": flat(buf.logp),
            "values_old": flat(buf.values),
            "advantages": flat(advantages),
            "returns": flat(returns),
        }

    def loss(
        self,
        mb: dict[str, torch.Tensor],
        clip_range: float,
        outputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss on one minibatch: ``policy - ent_coef * entropy + vf_coef * value``.

        Returns the scalar loss and detached terms/diagnostics. The minus sign on the entropy makes
        the bonus *raise* entropy when the loss is minimised. ``outputs`` are the networks' (policy
        output, value) when already computed; by default, ``policy(obs)``. With ``manual_grad`` (the
        default) the update uses ``manual_grad.loss_and_grads`` instead, the same loss with its gradient
        written out (tested equal); a subclass that overrides this method is trained with autograd on
        its own loss (``PPO.__init__`` checks).
        """
        cfg = self.config
        out, values = outputs if outputs is not None else self.policy(mb["obs"])
        logp, entropy = self.policy.log_prob_entropy(out, mb["actions"])
        adv = self._normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
        pg, ratio, kl = policy_loss(logp, mb["logp_old"], adv, cfg.objective, clip_range, self.kl_beta)
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
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "value_clip_fraction": vf_clipped.float().mean(),
            "ratio_mean": ratio.mean(),
        }
        return total, {k: v.detach() for k, v in terms.items()}

    def _normalize_advantages(self, adv: torch.Tensor) -> torch.Tensor:
        """Per-minibatch normalisation; with several ranks, over the union of their minibatches."""
        if not self.dist.enabled:
            return normalize(adv)
        mean, std, n = distributed.global_mean_std(adv)
        return adv if n <= 1 else (adv - mean) / (std + 1e-8)

    def update(self, clip_range: float) -> dict[str, float]:
        """Several epochs of minibatch gradient steps on the latest rollout (the update)."""
        cfg = self.config
        data = self._flatten_rollout()
        n = data["obs"].shape[0]
        n_minibatches = cfg.rollout_size // cfg.batch_size
        sums: dict[str, float] = {}
        keys: list[str] = []  # the loss terms, logged even when no step was taken
        count, stop = 0, False
        for _epoch in range(cfg.n_epochs):
            # One minibatch per epoch (the zoo's CartPole settings) is the whole rollout: its order
            # does not change the gradient, so it is used as it is, without a permuted copy.
            perm = torch.randperm(n, device=self.device) if n_minibatches > 1 else None
            for idx in torch.tensor_split(perm, n_minibatches) if perm is not None else [None]:
                if idx is not None and idx.numel() == 0 and not self.dist.enabled:
                    continue  # with several ranks an empty share still takes part: see _step
                mb = {k: v[idx] for k, v in data.items()} if idx is not None else data
                loss, terms, backward = self._loss_and_backward(mb, clip_range)
                keys = list(terms)
                # Target-KL early stop, checked before this minibatch's step (SB3's 1.5 * target_kl rule).
                if cfg.target_kl is not None:
                    kl_now = (
                        distributed.all_reduce_mean(terms["approx_kl"])
                        if self.dist.enabled
                        else terms["approx_kl"]
                    )
                    if kl_now > 1.5 * cfg.target_kl:
                        stop = True
                        break
                if not self._step(loss, backward):
                    continue  # a skipped step: its non-finite terms stay out of the averages
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
            if stop:
                break
        self.num_updates += 1
        # the logged losses are the mean over ranks (every rank has the same keys: they step together)
        # NaN when every step was skipped or target-KL stopped before the first: the keys stay the same
        means = {f"train/{k}": sums[k] / count if count else math.nan for k in keys}
        metrics = distributed.aggregate_metrics(means)
        metrics["train/kl_beta"] = self.kl_beta
        if cfg.objective == "kl_adaptive":
            self.kl_beta = adaptive_beta(self.kl_beta, self._kl_after_update(data), cfg.kl_target)
        metrics.update(
            {
                "train/explained_variance": float(explained_variance(data["values_old"], data["returns"])),
                "train/clip_range": clip_range,
                "train/learning_rate": self.optimizers[0].param_groups[0]["lr"],
                "train/n_updates": self.num_updates,
                "train/minibatch_steps": count,
                "train/early_stopped": float(stop),
                "train/nonfinite_skipped": self.nonfinite_skipped,
            }
        )
        return metrics

    def _loss_and_backward(
        self, mb: dict[str, torch.Tensor], clip_range: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Callable[[], None]]:
        """The minibatch loss, its terms, and the function that fills the parameters' gradients:
        autograd's ``loss.backward``, or (``manual_grad``) autograd from the loss to the network
        outputs followed by the hand-written backward through the networks."""
        if self.manual_grad is None:
            loss, terms = self.loss(mb, clip_range)
            return loss, terms, loss.backward
        out, values, saved = self.policy.infer(mb["obs"])
        cfg = self.config
        adv = self._normalize_advantages(mb["advantages"]) if cfg.normalize_advantage else mb["advantages"]
        loss, terms, grads = loss_and_grads(self.policy, cfg, mb, adv, out, values, clip_range, self.kl_beta)

        def backward() -> None:
            if "log_std" in grads:
                self.policy.actor_log_std.grad.copy_(grads["log_std"])
            self.manual_grad.backward(saved, grads["out"], grads["value"])

        return loss, terms, backward

    def _step(self, loss: torch.Tensor, backward: Callable[[], None]) -> bool:
        """One optimizer step; returns whether it was taken. A non-finite loss or gradient skips
        the step (parameters and Adam moments stay untouched) and is counted; after
        ``nonfinite_stop_after`` in a row, ``NonFiniteError``."""
        for opt in self.optimizers:
            opt.zero_grad()
        if torch.isfinite(loss):
            backward()
        else:  # a NaN gradient instead: through the all-reduce every rank sees it and skips this step too
            for opt in self.optimizers:
                opt.flat_grad.fill_(math.nan)
        # One collective per step: ranks agree on skipping because they share the averaged gradient.
        distributed.average_gradients([opt.flat_grad for opt in self.optimizers])
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        finite = bool(torch.isfinite(clip_grad_norm(self.optimizers, max_norm)))
        if not finite:
            self.nonfinite_skipped += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= self.config.nonfinite_stop_after:
                raise NonFiniteError(
                    f"the loss or its gradient was non-finite in {self.nonfinite_in_a_row} optimizer steps "
                    f"in a row (update {self.num_updates + 1}, step {self.num_timesteps}; "
                    f"nonfinite_stop_after={self.config.nonfinite_stop_after})"
                )
            return False
        self.nonfinite_in_a_row = 0
        for opt in self.optimizers:
            opt.step()
        return True

    @torch.no_grad()
    def _kl_after_update(self, data: dict[str, torch.Tensor]) -> float:
        """Mean KL(pi_old || pi_new) over the whole rollout, for the adaptive-beta rule."""
        logp, _, _ = self.policy.evaluate(data["obs"], data["actions"])
        return float(distributed.all_reduce_mean(approx_kl(logp, data["logp_old"])))
