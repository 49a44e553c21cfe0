"""GRPO: Group Relative Policy Optimization for causal language models, in four steps per batch.

DeepSeekMath (Shao et al. 2024, https://arxiv.org/abs/2402.03300), section 4.1. One training step:

1. generate   G completions per prompt, one batched pass with a KV cache        (``rollout``)
2. advantage  A = (r - mean_group) / (std_group + eps), rewards from the user's functions
3. KL         k3 estimate of KL(pi || pi_ref) per token, weighted by kl_coef   (``loss``)
4. loss       -min(r*A, clip(r, 1-eps_low, 1+eps_high)*A) + kl_coef*KL, aggregated by
              ``loss_type``, ``n_epochs`` updates per generation batch          (``update``)

``train_step`` is ``rollout`` then ``update``; ``loss(batch)`` is the override point (the class
docstring shows a subclass adding a term). What each ``loss_type`` means, its objective and its
reduction, is one entry of ``ppokit.functional.loss_types.LOSS_TYPES``.

The maths lives in ``ppokit.functional`` (shared with Gymnasium PPO); prompts, evaluation,
checkpoints and the report live in ``ppokit.llm.trainer.LMTrainer``; this file is the algorithm.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch

from ppokit import distributed
from ppokit.functional import (
    clip_fraction,
    clipped_fractions,
    get_loss_type,
    group_normalize,
    kl_k3,
    masked_mean,
    masked_sum,
    reduction_of,
)
from ppokit.llm.generation import completion_logprobs
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.trainer import LMTrainer


@dataclass
class Rollout:
    """One generation batch, ``B = prompts_per_step * G`` rows, groups of G consecutive rows."""

    rows: list[dict[str, Any]]  # prompt rows, each repeated G times
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, L] pad after EOS
    mask: torch.Tensor  # [B, L] tokens that enter the loss
    ended: torch.Tensor  # [B] an EOS was produced
    lengths: torch.Tensor  # [B] completion tokens up to and including the first EOS
    texts: list[str]  # decoded completions
    rewards: torch.Tensor  # [B] weighted sum (NaN: no function scored it)
    per_fn: torch.Tensor  # [B, F]
    advantages: torch.Tensor  # [B]
    zero_std: torch.Tensor  # [B] the row's group had equal rewards

    def micro_batch(
        self,
        rows: slice,
        logp_old: torch.Tensor | None = None,
        logp_ref: torch.Tensor | None = None,
        step_tokens: float | None = None,
        n_micro: int = 1,
        with_entropy: bool = False,
    ) -> GRPOBatch:
        """The ``GRPOTrainer.loss`` input for ``rows`` of this batch; ``logp_old`` / ``logp_ref`` are
        the whole batch's (``[B, L]``) or None; ``step_tokens`` defaults to the rows' valid tokens."""
        mask = self.mask[rows]
        return GRPOBatch(
            self.prompt_ids[rows],
            self.prompt_mask[rows],
            self.completion_ids[rows],
            mask,
            self.advantages[rows],
            None if logp_old is None else logp_old[rows],
            None if logp_ref is None else logp_ref[rows],
            float(mask.sum().clamp(min=1)) if step_tokens is None else step_tokens,
            n_micro,
            with_entropy,
        )


@dataclass
class GRPOBatch:
    """One micro-batch, the input of ``GRPOTrainer.loss``: ``n`` rows of a ``Rollout`` and what the
    optimizer step they belong to needs to normalise (``Rollout.micro_batch`` builds it)."""

    prompt_ids: torch.Tensor  # [n, P]
    prompt_mask: torch.Tensor  # [n, P]
    completion_ids: torch.Tensor  # [n, L]
    mask: torch.Tensor  # [n, L]
    advantages: torch.Tensor  # [n]
    logp_old: torch.Tensor | None  # [n, L]; None: the current policy sampled them (ratio 1)
    logp_ref: torch.Tensor | None  # [n, L]; None: no KL term
    step_tokens: float  # valid tokens of the whole optimizer step (all ranks' mean)
    n_micro: int  # micro-batches in the optimizer step
    with_entropy: bool = False  # also report the mean token entropy

    @property
    def share(self) -> float:
        """This micro-batch's part of the optimizer step: a per-step term times ``share``, added
        to each micro-batch's loss, adds up to the term once over the step."""
        return 1.0 / self.n_micro


class GRPOTrainer(LMTrainer):
    """``GRPOTrainer(model, tokenizer, reward_funcs, train_prompts, config).train()``.

    ``model`` is any HF causal LM (``AutoModelForCausalLM``), ``reward_funcs`` one function or a list
    (see ``ppokit.llm.rewards``), ``train_prompts`` strings or dicts with a ``prompt`` key plus
    columns passed to the reward functions. ``eval_prompts`` and ``accuracy_fn(rows, completions) ->
    list[bool]`` add a held-out exact-match accuracy (greedy decoding). With ``run_dir`` the trainer
    writes config.yaml, metrics.csv, tb/, plots/, samples.md and checkpoints/ there. ``ref_model``
    defaults to a frozen copy of ``model`` taken here (none at all when ``kl_coef == 0``).

    One step (``train_step``) is ``rollout()`` (generate and score a batch) then ``update(batch)``
    (the optimizer steps), which calls ``loss(micro_batch) -> (loss, terms)`` for every micro-batch.
    To change the loss, override ``loss``; the loop stays as it is. E.g. an L2 pull of the weights
    towards where they started, added once per optimizer step (``share`` spreads it over the
    micro-batches)::

        class AnchoredGRPO(GRPOTrainer):
            def _setup(self):
                super()._setup()
                self.start = [p.detach().clone() for p in self.model.parameters()]

            def loss(self, batch):
                loss, terms = super().loss(batch)
                l2 = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.model.parameters(), self.start))
                terms["l2"] = float(l2)
                return loss + 0.01 * l2 * batch.share, terms

    A new ``loss_type`` is one ``ppokit.functional.register_loss_type`` call (docs/grpo.md).
    """

    algo = "grpo"
    config_cls = GRPOConfig

    def _kl_weight(self) -> float:
        return self.config.kl_coef

    def _setup(self) -> None:
        self.last_rollout: Rollout | None = None
        # Rows come in groups of G with one prompt: run each prompt once per group (generation and loss).
        cfg = self.config
        self._group = cfg.num_generations if cfg.share_prompt_prefix else 1
        # Gradient checkpointing recomputes each layer without its KV cache (transformers drops the cache
        # of checkpointed layers in training mode), so the log-prob passes cannot share the prompt's
        # cache: they run each row's prompt; sampling (eval mode) still shares it.
        self._loss_group = self._group
        if cfg.gradient_checkpointing and self._group > 1:
            self._loss_group = 1
            self._warn(
                "gradient_checkpointing=true: the log-prob passes run each row's prompt; "
                "share_prompt_prefix applies to sampling only"
            )

    # ------------------------------------------------------------------ 1. generate
    @torch.no_grad()
    def rollout(self, rows: list[dict[str, Any]] | None = None) -> Rollout:
        """Generate G completions for each of ``rows`` (default: the next ``prompts_per_step``
        prompts), score them and compute their group-relative advantages: one step's batch."""
        rows = self._next_rows() if rows is None else rows
        cfg, G = self.config, self.config.num_generations
        rows = [r for r in rows for _ in range(G)]  # groups of G consecutive rows
        # each group's prompt runs once, its KV cache shared by the G completions (share_prompt_prefix)
        prompt_ids, prompt_mask, out, texts = self.sample(rows, group=self._group)
        # ---------------------------------------------------------- 2. advantage
        rewards, per_fn = self.score_samples(rows, out, texts)  # a step with no signal stops the run
        unscored = torch.isnan(rewards)
        grouped = rewards.view(-1, G)
        # A completion no function scored is left out of the loss; for the group statistics it takes
        # its group's mean, so it shifts neither the mean nor (much) the std of the others.
        fill = torch.nan_to_num(grouped.nanmean(dim=1, keepdim=True)).expand_as(grouped).reshape(-1)
        filled = torch.where(unscored, fill, rewards)
        if self.dist.enabled and cfg.scale_rewards == "batch":  # the batch std is over every rank's groups
            everyone = torch.cat(distributed.all_gather_objects(filled))
            adv_all, zero_all = group_normalize(everyone, G, "batch", cfg.adv_eps)
            mine = slice(self.dist.rank * len(filled), (self.dist.rank + 1) * len(filled))
            advantages, zero_std = adv_all[mine], zero_all[mine]
        else:
            advantages, zero_std = group_normalize(filled, G, cfg.scale_rewards, cfg.adv_eps)
        mask = out.mask & ~unscored.to(out.mask.device)[:, None]
        if cfg.mask_truncated_completions:  # DAPO's overlong filtering: no signal from cut-off text
            mask &= out.ended[:, None]
        return Rollout(
            rows,
            prompt_ids,
            prompt_mask,
            out.tokens,
            mask,
            out.ended,
            out.mask.sum(1),
            texts,
            rewards,
            per_fn,
            advantages.to(self.device),
            zero_std,
        )

    # ------------------------------------------------------------------ 3 + 4. KL and loss
    @torch.no_grad()
    def _logprobs(self, model: Any, ro: Rollout) -> torch.Tensor:
        cfg = self.config
        with self.autocast():
            parts = [
                self.forward(
                    model,
                    completion_logprobs,
                    ro.prompt_ids[s],
                    ro.prompt_mask[s],
                    ro.completion_ids[s],
                    ro.mask[s],
                    cfg.generation.temperature,
                    group_size=self._loss_group,
                    chunk_size=cfg.logprob_chunk_size,
                )[0]
                for s in self._chunks(len(ro.rows))
            ]
        return torch.cat(parts)

    def _ref_logprobs(self, ro: Rollout) -> torch.Tensor:
        """Log-probs under the reference: the frozen copy, or the LoRA policy with its adapter off."""
        with self.reference() as ref:
            return self._logprobs(ref, ro)

    def loss(self, batch: GRPOBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch, as it enters ``backward`` (already scaled for gradient
        accumulation: the micro-batches' losses add up to the optimizer step's), and its detached
        diagnostics (``loss``, the clip fractions, ``kl``, ``entropy``). The override point."""
        cfg = self.config
        bonus = cfg.ent_coef > 0
        with self.autocast():
            logp, entropy = self.forward(
                self.model,
                completion_logprobs,
                batch.prompt_ids,
                batch.prompt_mask,
                batch.completion_ids,
                batch.mask,
                cfg.generation.temperature,
                batch.with_entropy or bonus,
                group_size=self._loss_group,
                chunk_size=cfg.logprob_chunk_size,
                entropy_grad=bonus,
            )
        # n_epochs == 1: the policy that sampled is the current one, so the detached current
        # log-probs are the old ones (ratio = 1, gradient of r*A = A * grad logp) - no extra forward.
        old = logp.detach() if batch.logp_old is None else batch.logp_old
        mask = batch.mask
        log_ratio = logp - old
        if cfg.importance_sampling_level == "sequence":
            # GSPO (Zheng et al. 2025, https://arxiv.org/abs/2507.18071, eq. 7): one ratio per completion,
            # the geometric mean of its tokens' ratios, shared by all its tokens
            seq = masked_sum(log_ratio, mask, dim=-1) / mask.sum(-1).clamp(min=1)
            log_ratio = seq[:, None].expand_as(logp)
        ratio = torch.exp(log_ratio)
        per_token, is_low, is_high = self._objective(ratio, batch.advantages[:, None], logp)
        # the two clip fractions of ppokit.functional.diagnostics, under the classic side's names
        stats = {f"train/{k}": v.item() for k, v in clipped_fractions(is_low, is_high, mask).items()}
        stats["train/clip_fraction"] = clip_fraction(ratio, cfg.clip_range, mask, cfg.clip_range_high).item()
        if batch.logp_ref is not None:
            kl = kl_k3(logp, batch.logp_ref)  # KL(pi || pi_ref), samples from pi (DeepSeekMath eq. 4)
            per_token = per_token + cfg.kl_coef * kl
            stats["kl"] = masked_mean(kl.detach(), mask).item()
        if entropy is not None and batch.with_entropy:
            stats["entropy"] = masked_mean(entropy.detach(), mask).item()
        # what loss_type means, objective and reduction, is its entry in functional.loss_types
        reduce = reduction_of(cfg.loss_type)
        m = mask.to(per_token.dtype)
        step_tokens = torch.as_tensor(batch.step_tokens, dtype=per_token.dtype)
        loss = reduce.fn(per_token, m, cfg.generation.max_completion_length, step_tokens)
        if bonus:  # the mean token entropy over the optimizer step, whatever loss_type (as TRL)
            mean_entropy = masked_sum(entropy, mask) / (
                batch.step_tokens if reduce.step_normalised else mask.sum().clamp(min=1)
            )
            loss = loss - cfg.ent_coef * mean_entropy
        # a step-normalised reduction already divides by the whole step's tokens; the others are
        # micro-batch means, averaged over the step's micro-batches
        if not reduce.step_normalised:
            loss = loss / batch.n_micro
        stats["loss"] = loss.item()
        return loss, stats

    def _objective(
        self, ratio: torch.Tensor, advantages: torch.Tensor, logp: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-token objective of ``loss_type`` (negated), and the low/high clip masks."""
        return get_loss_type(self.config.loss_type).objective(ratio, advantages, logp, self.config)

    def _epoch_backward(
        self,
        ro: Rollout,
        logp_old: torch.Tensor | None,
        logp_ref: torch.Tensor | None,
        num_tokens: float,
        first: bool,
        sums: dict[str, list[float]],
        losses: list[float],
        part: slice | None = None,
    ) -> float:
        """Backward over the micro-batches of ``part`` of the batch (all of it by default; gradient
        accumulation) for one optimizer step; appends the diagnostics to ``sums`` and the summed loss
        to ``losses``, and returns that loss: the optimizer step's loss, which the guard checks."""
        part = part if part is not None else slice(0, len(ro.rows))
        chunks = [
            slice(part.start + c.start, part.start + c.stop) for c in self._chunks(part.stop - part.start)
        ]
        total = 0.0
        for s in chunks:
            batch = ro.micro_batch(s, logp_old, logp_ref, num_tokens, len(chunks), first)
            loss, stats = self.loss(batch)
            (loss * self.guard.loss_scale).backward()  # the loss scale is 1 unless fp16
            total += stats.pop("loss")
            for k, v in stats.items():
                sums.setdefault(k, []).append(v)
        losses.append(total)
        return total

    def update(self, ro: Rollout) -> dict[str, float]:
        """``n_epochs`` passes of ``steps_per_generation`` optimizer steps over the batch ``ro``;
        returns the mean loss, diagnostics and gradient norm over the steps taken."""
        cfg = self.config
        logp_ref = self._ref_logprobs(ro) if self.has_reference else None
        steps = cfg.steps_per_generation
        # the policy moves within the batch (several epochs or steps): the old log-probs, computed once
        logp_old = self._logprobs(self.model, ro) if cfg.n_epochs > 1 or steps > 1 else None
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        size = len(ro.rows) // steps  # whole groups: prompts_per_step is a multiple of steps
        parts = [slice(k * size, (k + 1) * size) for k in range(steps)]
        sums: dict[str, list[float]] = {}
        for iteration in range(cfg.n_epochs):
            for part in parts:
                num_tokens = float(ro.mask[part].sum().clamp(min=1))  # dapo: this optimizer step's tokens
                if self.dist.enabled:  # divided by the ranks that average
                    num_tokens = float(distributed.all_reduce_mean(torch.tensor(num_tokens)))
                losses: list[float] = []
                backward = functools.partial(
                    self._epoch_backward,
                    ro,
                    logp_old,
                    logp_ref,
                    num_tokens,
                    iteration == 0,
                    sums,
                    losses,
                    part,
                )
                # the guard averages gradients across ranks (data parallel), clips, skips non-finite steps
                if self._guarded_step(backward):
                    sums.setdefault("loss", []).append(losses[-1])
                    sums.setdefault("grad_norm", []).append(self.guard.last_norm)
        return {k: sum(v) / len(v) for k, v in sums.items()}

    # ------------------------------------------------------------------ one step, metrics
    def train_step(self) -> dict[str, float]:
        """Generate, score and update once; returns the step's metrics (TRL's names)."""
        start = time.perf_counter()
        ro = self.rollout()
        gen_time = time.perf_counter() - start
        metrics = self.update(ro)
        self.step += 1
        self.last_rollout = ro
        self.last_samples = [
            {"prompt": r["prompt"], "completion": t, "reward": float(x), "advantage": float(a)}
            for r, t, x, a in zip(ro.rows, ro.texts, ro.rewards, ro.advantages)
        ]
        lengths = ro.lengths.float()
        completion_tokens = float(lengths.sum())
        self.num_tokens += int(ro.prompt_mask.sum()) + int(completion_tokens)
        step_time = time.perf_counter() - start
        grouped = torch.nan_to_num(ro.rewards).view(-1, self.config.num_generations)
        metrics.update(
            {
                "step": self.step,
                "reward": float(ro.rewards.nanmean()),
                "reward_std": float(grouped.std(dim=1).mean()) if grouped.shape[1] > 1 else 0.0,
                "frac_reward_zero_std": float(ro.zero_std.float().mean()),
                "completions/mean_length": float(lengths.mean()),
                "completions/clipped_ratio": float((~ro.ended).float().mean()),
                "num_tokens": self.num_tokens,
                "learning_rate": self._lr(),
                "train/nonfinite_skipped": self.guard.skipped,  # as classic PPO logs it
                "step_time": step_time,
                "generation_time": gen_time,
                "completion_tokens_per_s": completion_tokens / step_time,
            }
        )
        for j, name in enumerate(self.reward_names):
            col = ro.per_fn[:, j]
            metrics[f"rewards/{name}/mean"] = float(col.nanmean())
        return distributed.aggregate_metrics(metrics, summed=("num_tokens", "completion_tokens_per_s"))


__all__ = ["GRPOBatch", "GRPOConfig", "GRPOTrainer", "Rollout"]
