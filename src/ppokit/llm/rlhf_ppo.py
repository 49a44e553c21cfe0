"""PPO for causal language models with a learned critic: the RLHF recipe of Ziegler et al. 2019 and
Ouyang et al. 2022, in five steps per batch.

1. rollout   one completion per prompt, one batched pass with a KV cache, scored by the reward
             functions and/or a reward model                                           (``rollout``)
2. score     log-probs under the sampling policy (pi_old) and the frozen reference, and one value
             per token from the value head                                            (``_score``)
3. rewards   r_t = -kl_coef * KL_t on every token, plus the score at the last token (Ziegler eq. 2)
4. GAE       over tokens (gamma = 1, lambda = 0.95), advantages whitened over valid tokens
5. update    n_epochs passes of num_mini_batches minibatches: clipped surrogate plus
             vf_coef * clipped value loss, both averaged over valid tokens     (``update``, ``loss``)

then the adaptive rule moves ``kl_coef`` towards its target (Ziegler et al. 2019, section 2.2).
``train_step`` is ``rollout`` then ``update``; ``loss(batch)`` is the override point, as on GRPO.
The losses, GAE and KL estimators are ``ppokit.functional`` (shared with Gymnasium PPO); the token
layout is ``ppokit.functional.tokens``; prompts, evaluation, checkpoints and the run loop are
``ppokit.llm.trainer.LMTrainer``. Implementation choices follow Huang et al., "The N+ implementation
details of RLHF with PPO" (2024), and TRL's PPOTrainer where they agree.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppokit import distributed
from ppokit.functional import (
    adaptive_kl_coef,
    clipped_fractions,
    clipped_surrogate,
    explained_variance,
    kl_estimate,
    kl_k3,
    masked_sum,
    outside_clip,
    per_token_rewards,
    token_gae,
    value_loss,
)
from ppokit.functional.losses import entropy_from_logits
from ppokit.functional.tokens import selective_log_softmax
from ppokit.llm.generation import head_logprobs, positions_from_mask, split_lm, unwrap_peft
from ppokit.llm.report import plot_rlhf_run
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig
from ppokit.llm.trainer import LMTrainer
from ppokit.llm.value_head import ValueHead, hidden_size


@dataclass
class PPOBatch:
    """One rollout batch of ``B = prompts_per_step`` completions; ``[B, L]`` tensors are 0 on padding."""

    rows: list[dict[str, Any]]
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, L] pad after EOS
    mask: torch.Tensor  # [B, L] tokens that enter the loss (up to and including the first EOS)
    ended: torch.Tensor  # [B] an EOS was produced
    texts: list[str]
    scores: torch.Tensor  # [B] weighted reward (after the missing-EOS penalty; 0 where unscored)
    per_fn: torch.Tensor  # [B, F]
    logp_old: torch.Tensor  # [B, L] log-probs under the policy that sampled
    values_old: torch.Tensor  # [B, L]
    kl: torch.Tensor  # [B, L] per-token KL(pi || pi_ref) estimate
    rewards: torch.Tensor  # [B, L]
    advantages: torch.Tensor  # [B, L] whitened
    returns: torch.Tensor  # [B, L] critic targets


@dataclass
class PPOMiniBatch:
    """The input of ``RLHFPPOTrainer.loss``: the rows ``idx`` of a rollout ``PPOBatch`` (one
    micro-batch of a minibatch), and the minibatch's valid-token count the loss is divided by."""

    rollout: PPOBatch
    idx: torch.Tensor  # [n] row indices into the rollout
    step_tokens: float  # valid tokens of the optimizer step's minibatch (all ranks' mean)
    with_entropy: bool = False  # also report the mean token entropy

    @property
    def share(self) -> float:
        """This micro-batch's part of the optimizer step (its share of the minibatch's tokens)."""
        return float(self.rollout.mask[self.idx].sum()) / self.step_tokens


class RLHFPPOTrainer(LMTrainer):
    """``RLHFPPOTrainer(model, tokenizer, reward_funcs, train_prompts, config).train()``.

    Arguments as ``GRPOTrainer``'s: ``model`` any HF causal LM, ``reward_funcs`` one function or a list
    with TRL's signature (a ``ppokit.llm.reward_model.RewardModel`` is one too), ``train_prompts``
    strings or dicts with a ``prompt`` key. The value head sits on the policy's trunk or, with
    ``value_model="separate"``, on a copy of the initial model's trunk. ``ref_model`` defaults to a
    frozen copy of ``model`` taken here (none when ``kl_coef == 0`` and the rule is not adaptive).

    One step (``train_step``) is ``rollout()`` then ``update(batch)``, which calls ``loss(mini_batch)
    -> (loss, terms)`` per micro-batch: override ``loss`` to add a term (``GRPOTrainer``'s docstring
    has an example; ``PPOMiniBatch.share`` scales a per-step term).
    """

    algo = "rlhf_ppo"
    config_cls = RLHFPPOConfig
    progress_metric = "objective/scores"

    def _kl_weight(self) -> float:
        return self.config.kl_coef

    def _build_models(self) -> None:
        cfg = self.config
        # Dropout off in every forward (eval mode; gradients still flow): with dropout pi_old and pi
        # disagree on identical weights, so the first ratios would not be 1 (TRL disables it too).
        self.model.eval()
        # A separate critic starts as a copy of the policy's trunk (TRL starts it from the reward
        # model; we cannot assume one exists). It shares no parameter with the policy. With LoRA the
        # trunk copy keeps its own adapters (trained) over a frozen copy of the base.
        self._split = split_lm(self.model)
        self.critic = None
        if cfg.value_model == "separate":
            self.critic = copy.deepcopy(self._trunk())
        with torch.random.fork_rng(devices=[]):  # the head's init depends on the seed only
            torch.manual_seed(cfg.seed)
            self.value_head = ValueHead(hidden_size(unwrap_peft(self.model))).to(self.device)
        distributed.broadcast_parameters(self.value_head)  # torchrun: every rank starts identical

    def _shard_parts(self) -> list[tuple[Any, bool, bool]]:
        # fsdp: the critic trunk per block like the policy; the value head as one float32 unit
        parts = [(self.value_head, False, False)]
        return parts + ([(self.critic, True, True)] if self.critic is not None else [])

    def _extra_modules(self) -> dict[str, Any]:
        return {"value_head": self.value_head, **({"critic": self.critic} if self.critic is not None else {})}

    def _setup(self) -> None:
        cfg = self.config
        critic_params = list(self.value_head.parameters())
        if self.critic is not None:  # only what trains: a LoRA critic's frozen base gets no gradient
            critic_params += [p for p in self.critic.parameters() if p.requires_grad]
        self.optimizer.add_param_group(
            {"params": critic_params, "lr": self._critic_lr_scale() * cfg.learning_rate}
        )
        self.kl_coef = cfg.kl_coef  # moved by the adaptive rule after every batch when kl_adaptive
        self.last_batch: PPOBatch | None = None

    def _trunk(self) -> Any:
        """The transformer trunk of the policy (final hidden states), LoRA layers included."""
        if self._split is not None:
            return self._split[0]
        return unwrap_peft(self.model).base_model

    def _critic_lr_scale(self) -> float:
        cfg = self.config
        return (cfg.critic_learning_rate or cfg.learning_rate) / cfg.learning_rate

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, torch.Tensor]:
        # Everything a resume cannot rebuild: the KL anchor (LMTrainer's), the critic, the adapted
        # coefficient.
        out = super()._extra_state()
        out.update({f"value_head.{k}": v for k, v in self.value_head.state_dict().items()})
        if self.critic is not None:
            out.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        out["kl_coef"] = torch.tensor([self.kl_coef], dtype=torch.float64)
        return out

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._load_extra_state(tensors)
        part = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.value_head.load_state_dict(part("value_head."))
        if self.critic is not None:
            self.critic.load_state_dict(part("critic."))
        if "kl_coef" in tensors:
            self.kl_coef = float(tensors["kl_coef"][0])

    # ------------------------------------------------------------------ forward passes
    def _forward(
        self, b: PPOBatch, idx: Any, model: Any = None, value: bool = True, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logp [n, L], values [n, L] or None, entropy [n, L] or None)`` for the rows ``idx``.

        Logits and values come from the same positions: position ``P - 1 + t`` sees the prompt and
        tokens ``< t``, predicts token t and values the state before it. Log-probs use the sampling
        temperature, as the tokens were drawn at it, and are computed ``logprob_chunk_size`` tokens at a
        time from the trunk's hidden states (``generation.head_logprobs``) when the model splits into
        trunk and head.
        """
        model = self.model if model is None else model
        prompt, completion = b.prompt_ids[idx], b.completion_ids[idx]
        width, length = prompt.shape[1], completion.shape[1]
        ids = torch.cat([prompt, completion], dim=1)
        attn = torch.cat([b.prompt_mask[idx].long(), b.mask[idx].long()], dim=1)
        pos = positions_from_mask(attn)
        shared = value and self.critic is None
        with self.autocast():
            # one call of the policy (through its FSDP forward when sharded: it calls trunk and head)
            args = (ids, attn, pos, completion, width, shared, with_entropy)
            logp, entropy, hidden = self.forward(model, self._policy_pass, *args)
            values = None
            if value:
                if not shared:
                    out = self.critic(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
                    hidden = out.last_hidden_state[:, width - 1 : width + length - 1]
                values = self.value_head(hidden)
        return logp, values, entropy

    def _policy_pass(
        self,
        model: Any,
        ids: torch.Tensor,
        attn: torch.Tensor,
        pos: torch.Tensor,
        completion: torch.Tensor,
        width: int,
        shared: bool,
        with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logp, entropy, hidden)`` of the completion tokens under ``model`` (``hidden``: the final
        hidden states the shared value head reads, when ``shared``)."""
        cfg = self.config
        length = completion.shape[1]
        temp = cfg.generation.temperature
        split = split_lm(model) if cfg.logprob_chunk_size > 0 else None
        if split is not None:
            trunk, head = split
            hidden = trunk(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
            hidden = hidden.last_hidden_state[:, width - 1 : width + length - 1]
            every = torch.ones_like(completion, dtype=torch.bool)
            mode = "detached" if with_entropy else "none"
            logp, entropy = head_logprobs(head, hidden, completion, every, temp, cfg.logprob_chunk_size, mode)
        else:
            out = model(
                input_ids=ids,
                attention_mask=attn,
                position_ids=pos,
                use_cache=False,
                output_hidden_states=shared,
                logits_to_keep=length + 1,
            )
            logits = out.logits[:, :-1].float() / temp
            logp = selective_log_softmax(logits, completion)
            entropy = None
            if with_entropy:
                with torch.no_grad():
                    entropy = entropy_from_logits(logits)
            hidden = out.hidden_states[-1][:, width - 1 : width + length - 1] if shared else None
        return logp, entropy, hidden

    @torch.no_grad()
    def _score(self, b: PPOBatch) -> None:
        """Fill ``logp_old``, ``values_old`` and the per-token KL of a fresh batch, chunk by chunk."""
        logp, values, kl = [], [], []
        for s in self._chunks(len(b.rows)):
            lp, v, _ = self._forward(b, s)
            logp.append(lp)
            values.append(v)
            if self.has_reference:  # the frozen copy, or the LoRA policy with its adapter disabled
                with self.reference() as ref:
                    lp_ref = self._forward(b, s, model=ref, value=False)[0]
                # KL(pi || pi_ref) with tokens sampled from pi: k1 = logp - logp_ref (TRL's default).
                kl.append(kl_estimate(lp, lp_ref, self.config.kl_estimator))
        m = b.mask.float()
        b.logp_old, b.values_old = torch.cat(logp) * m, torch.cat(values) * m
        b.kl = torch.cat(kl) * m if kl else torch.zeros_like(m)

    # ------------------------------------------------------------------ 1-4. rollout and advantages
    @torch.no_grad()
    def rollout(self, rows: list[dict[str, Any]] | None = None) -> PPOBatch:
        """Sample one completion for each of ``rows`` (default: the next ``prompts_per_step`` prompts),
        score it, and compute per-token rewards, values, advantages and returns: one step's batch."""
        rows = self._next_rows() if rows is None else rows
        cfg = self.config
        prompt_ids, prompt_mask, out, texts = self.sample(rows)
        scores, per_fn = self.score_samples(rows, out, texts)  # a step with no signal stops the run
        unscored = torch.isnan(scores)  # no function scored it: it stays out of the update
        scores = torch.nan_to_num(scores).to(self.device)
        if cfg.missing_eos_penalty is not None:  # TRL's missing_eos_penalty
            scores = scores - cfg.missing_eos_penalty * (~out.ended).float()
        mask = out.mask & ~unscored.to(self.device)[:, None]
        zeros = torch.zeros(mask.shape, device=self.device)
        b = PPOBatch(rows, prompt_ids, prompt_mask, out.tokens, mask, out.ended, texts, scores, per_fn,
                     *(zeros,) * 6)  # fmt: skip
        self._score(b)
        b.rewards = per_token_rewards(scores, b.kl, mask, self.kl_coef)
        if cfg.whiten_rewards:
            b.rewards = distributed.whiten(b.rewards, mask, shift_mean=False)
        advantages, b.returns = token_gae(b.rewards, b.values_old, mask, cfg.gamma, cfg.gae_lambda)
        # Whitened over the whole batch's valid tokens, once (Huang et al. 2024; TRL does the same).
        b.advantages = distributed.whiten(advantages, mask) if cfg.normalize_advantage else advantages
        return b

    # ------------------------------------------------------------------ 5. update
    def loss(self, batch: PPOMiniBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch, already divided by its minibatch's token count (the
        micro-batches' losses add up to the optimizer step's), and its detached diagnostics, each
        the micro-batch's share of the minibatch's token mean. The override point."""
        cfg = self.config
        b, idx, num_tokens = batch.rollout, batch.idx, batch.step_tokens
        logp, values, entropy = self._forward(b, idx, with_entropy=batch.with_entropy)
        mask = b.mask[idx]
        ratio = torch.exp(logp - b.logp_old[idx])
        pg, is_low, is_high = clipped_surrogate(ratio, b.advantages[idx], cfg.clip_range)
        vf, vf_clipped = value_loss(values, b.returns[idx], b.values_old[idx], cfg.vf_clip_range)
        pg_sum, vf_sum = masked_sum(pg, mask), masked_sum(vf, mask)
        loss = (pg_sum + cfg.vf_coef * vf_sum) / num_tokens  # token mean over the minibatch
        per_token = lambda x: float(masked_sum(x.detach().float(), mask)) / num_tokens
        stats = {
            "loss/policy_avg": per_token(pg),
            "loss/value_avg": per_token(vf),
            "policy/approxkl_avg": per_token(kl_k3(b.logp_old[idx], logp)),  # KL(pi_old || pi)
            "train/clip_fraction": per_token(outside_clip(ratio, cfg.clip_range)),
            "train/value_clipped_fraction": per_token(vf_clipped),
            "val/ratio": per_token(ratio),
        }
        # the clip fractions of ppokit.functional.diagnostics, under the classic side's names; each
        # chunk's share of the minibatch's token mean, like the other stats
        share = float(mask.sum()) / num_tokens
        stats.update(
            {f"train/{k}": float(v) * share for k, v in clipped_fractions(is_low, is_high, mask).items()}
        )
        if entropy is not None:
            stats["policy/entropy_avg"] = per_token(entropy)
        return loss, stats

    def _minibatch_backward(
        self, b: PPOBatch, idx: torch.Tensor, num_tokens: float, first: bool, step: dict[str, float]
    ) -> float:
        """Backward over one minibatch's micro-batches (gradient accumulation), summing each chunk's
        share of the diagnostics into ``step``; returns the minibatch's loss (the micro-batches'
        losses summed), which the guard checks."""
        micro = self.config.micro_batch_size or len(idx)
        total = 0.0
        for j in range(0, len(idx), micro):
            loss, stats = self.loss(PPOMiniBatch(b, idx[j : j + micro], num_tokens, first))
            (loss * self.guard.loss_scale).backward()  # the loss scale is 1 unless fp16
            total += float(loss)
            for k, v in stats.items():
                step[k] = step.get(k, 0.0) + v
        return total

    def update(self, b: PPOBatch) -> dict[str, float]:
        """``n_epochs`` passes of minibatch optimizer steps over the batch ``b``; returns the mean
        diagnostics and gradient norm over the steps taken."""
        cfg = self.config
        lr = self._lr()
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.param_groups[1]["lr"] = lr * self._critic_lr_scale()
        n, size = len(b.rows), cfg.mini_batch_size
        sums: dict[str, list[float]] = {}
        for epoch in range(cfg.n_epochs):
            order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(self.device)
            for start in range(0, n, size):
                idx = order[start : start + size]
                num_tokens = float(b.mask[idx].sum().clamp(min=1))
                if self.dist.enabled:  # the ranks' mean: averaged gradients = the global token mean
                    num_tokens = float(distributed.all_reduce_mean(torch.tensor(num_tokens)))
                step: dict[str, float] = {}
                backward = functools.partial(self._minibatch_backward, b, idx, num_tokens, epoch == 0, step)
                # the guard averages gradients across ranks (data parallel), clips, skips non-finite steps
                if not self._guarded_step(backward):
                    continue
                step["grad_norm"] = self.guard.last_norm
                for k, v in step.items():
                    sums.setdefault(k, []).append(v)
        return {k: sum(v) / len(v) for k, v in sums.items()}

    # ------------------------------------------------------------------ one step, metrics
    def train_step(self) -> dict[str, float]:
        """Roll out, score and update once, then adapt kl_coef; returns the step's metrics (TRL's names)."""
        start = time.perf_counter()
        b = self.rollout()
        rollout_time = time.perf_counter() - start
        kl_coef = self.kl_coef
        metrics = self.update(b)
        kl_seq = b.kl.sum(1)  # KL per completion, summed over its tokens (as Ziegler et al. and TRL)
        mean_kl = float(distributed.all_reduce_mean(kl_seq.mean()))  # over every rank's completions
        cfg = self.config
        if cfg.kl_adaptive:
            n = len(b.rows) * self.dist.world_size
            self.kl_coef = adaptive_kl_coef(kl_coef, mean_kl, cfg.adaptive_kl_target, n, cfg.kl_horizon)
        self.step += 1
        self.last_batch = b
        lengths = b.mask.sum(1).float()
        valid = b.mask.bool()
        self.last_samples = [
            {"prompt": r["prompt"], "completion": t, "score": float(s), "kl": float(k), "value_0": float(v)}
            for r, t, s, k, v in zip(b.rows, b.texts, b.scores, kl_seq, b.values_old[:, 0])
        ]
        self.num_tokens += int(b.prompt_mask.sum()) + int(lengths.sum())
        step_time = time.perf_counter() - start
        metrics.update(
            {
                "objective/kl": mean_kl,
                "objective/entropy": float((-b.logp_old).sum(1).mean()),
                "objective/non_score_reward": float((-kl_coef * kl_seq).mean()),
                "objective/rlhf_reward": float((b.scores - kl_coef * kl_seq).mean()),
                "objective/scores": float(b.scores.mean()),
                "objective/kl_coef": kl_coef,
                "val/explained_variance": float(explained_variance(b.values_old[valid], b.returns[valid])),
                "val/num_eos_tokens": int(b.ended.sum()),
                "completions/mean_length": float(lengths.mean()),
                "completions/clipped_ratio": float((~b.ended).float().mean()),
                "episode": self.step * len(b.rows),
                "lr": self._lr(),
                "train/nonfinite_skipped": self.guard.skipped,  # as classic PPO logs it
                "num_tokens": self.num_tokens,
                "step_time": step_time,
                "generation_time": rollout_time,
            }
        )
        for j, name in enumerate(self.reward_names):
            metrics[f"rewards/{name}/mean"] = float(b.per_fn[:, j].nanmean())
        return distributed.aggregate_metrics(metrics, summed=("num_tokens", "episode", "val/num_eos_tokens"))

    # ------------------------------------------------------------------ report
    def _plot(self, run_dir: Path) -> list[Path]:
        """The PPO plots (objective, policy, value, accuracy, lengths); samples.md is LMTrainer's."""
        return plot_rlhf_run(run_dir)


__all__ = ["PPOBatch", "PPOMiniBatch", "RLHFPPOConfig", "RLHFPPOTrainer"]
