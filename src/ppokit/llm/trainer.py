"""``LMTrainer``: what every language-model trainer of ppokit shares, apart from its algorithm.

Model/tokenizer set-up, the frozen reference model, the prompt stream, greedy held-out evaluation,
the learning-rate schedule, the guarded optimizer step (``ppokit.train.step.GuardedStep``, as on the
classic side), checkpoints (save/load/resume, ``ppokit.train`` layout and RNG capture) and the report.
``GRPOTrainer`` adds the four GRPO steps; ``RLHFPPOTrainer`` adds its value head, per-token GAE and
KL penalty and keeps all of this (its value head goes into ``_extra_state`` / ``_load_extra_state``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ppokit import distributed
from ppokit.errors import ConfigError, NonFiniteError
from ppokit.llm import checkpoint as ckpt
from ppokit.llm.generation import encode_prompts, generate
from ppokit.llm.input_checks import check_lengths, check_prompt_rows, check_tokenizer, check_tokenizes
from ppokit.llm.models import eos_token_ids, prepare_tokenizer
from ppokit.llm.report import plot_llm_run, write_samples
from ppokit.llm.reward_checks import checked_rewards
from ppokit.llm.rewards import RewardFn, repeat_columns, reward_name, score_completions
from ppokit.train.rng import capture_rng, restore_rng
from ppokit.train.step import GuardedStep, gradients

AccuracyFn = Callable[[list[dict[str, Any]], list[str]], Sequence[bool]]


def as_rows(prompts: Sequence[Any]) -> list[dict[str, Any]]:
    """Prompt rows: strings become ``{"prompt": s}``; dicts must have a ``prompt`` key."""
    rows = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
    if not rows or any("prompt" not in r for r in rows):
        raise ConfigError("train_prompts must be a non-empty list of strings or of dicts with a 'prompt' key")
    return rows


def check_inputs(model: Any, tokenizer: Any, rows: list, eval_rows: list, generation: Any) -> None:
    """Prompts, tokenizer and lengths checked before any work (``llm/input_checks.py``)."""
    check_tokenizer(tokenizer)
    for what, rs in (("train_prompts", rows), ("eval_prompts", eval_rows)):
        check_prompt_rows(rs, what)
        check_tokenizes(tokenizer, rs, what)
        check_lengths(model, tokenizer, rs, generation, what)


class LMTrainer:
    """Shared state and plumbing; subclasses implement ``train_step() -> dict`` (one step's metrics),
    ``config_class()`` (an ``LMConfig``), and where they need them ``_kl_weight()`` and ``_setup()``.

    ``config`` defaults to ``config_class()()``; ``ref_model`` defaults to a frozen copy of ``model``
    taken here, and is built only when ``_kl_weight() > 0``.
    """

    algo = "lm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        reward_funcs: RewardFn | Sequence[RewardFn],
        train_prompts: Sequence[Any],
        config: Any = None,
        *,
        eval_prompts: Sequence[Any] | None = None,
        accuracy_fn: AccuracyFn | None = None,
        ref_model: Any = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
    ):
        self.config = cfg = config if config is not None else self.config_class()()
        cfg.validate()
        # torchrun: every rank trains on its own share of the prompts; only rank 0 evaluates, shows
        # progress and writes the run directory (see ppokit/distributed.py).
        self.dist = distributed.init(cfg.device)
        if not self.dist.is_main:
            eval_prompts, run_dir, progress = None, None, False
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device)
        distributed.broadcast_parameters(self.model)
        self.model.train()
        self.tokenizer = prepare_tokenizer(tokenizer)
        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        self.reward_funcs = checked_rewards(funcs)  # errors name the function and row (reward_checks.py)
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.rows = as_rows(train_prompts)
        self.eval_rows = as_rows(eval_prompts) if eval_prompts else []
        check_inputs(self.model, self.tokenizer, self.rows, self.eval_rows, cfg.generation)
        self.accuracy_fn = accuracy_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.eos_ids = eos_token_ids(model, tokenizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
        )
        # each rank samples its own completions (the prompt order below is shared by all ranks)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + 100_003 * self.dist.rank)
        self.order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(cfg.seed))
        self.cursor = self.epoch = self.step = self.num_tokens = 0
        self.accuracy_before: float | None = None
        self.last_samples: list[dict[str, Any]] = []
        # One optimizer step with non-finite handling, float64 norm and clipping, shared with classic
        # PPO; a subclass's _setup may add param groups (a value head): the guard reads them per step.
        where = lambda: f"{self.algo} step {self.step + 1}"
        self.guard = GuardedStep([self.optimizer], cfg.max_grad_norm, cfg.nonfinite_stop_after, where)
        # The KL anchor: the policy training starts from (or ``ref_model``), frozen. A KL weight of 0
        # needs none: skip the copy and its forward passes entirely.
        self.ref_model = None
        if self._kl_weight() > 0:
            self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(model)).to(self.device)
            self.ref_model.eval().requires_grad_(False)
        self._setup()

    def _kl_weight(self) -> float:
        """The weight of the algorithm's KL penalty to the reference model (0: no reference model).
        0 here: an ``LMTrainer`` of its own only evaluates (the CLI's warm-start probe)."""
        return 0.0

    def _setup(self) -> None:
        """What a subclass adds to the trainer's state (a value head, ...), after the shared set-up."""

    def train_step(self) -> dict[str, float]:  # pragma: no cover - abstract
        """One step of the algorithm; returns its metrics."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prompts, schedule, guards
    def _next_rows(self) -> list[dict[str, Any]]:
        """This rank's ``prompts_per_step`` prompts of a seeded shuffle (reshuffled every epoch). With
        N ranks the step takes N * prompts_per_step prompts and rank r keeps the r-th share, so each
        group is generated and normalised whole on one rank."""
        n, world, rank = self.config.prompts_per_step, self.dist.world_size, self.dist.rank
        out = []
        while len(out) < n * world:
            if self.cursor >= len(self.order):
                self.epoch += 1
                gen = torch.Generator().manual_seed(self.config.seed + self.epoch)
                self.order, self.cursor = torch.randperm(len(self.rows), generator=gen), 0
            out.append(self.rows[int(self.order[self.cursor])])
            self.cursor += 1
        return out[rank * n : (rank + 1) * n]

    def _chunks(self, n: int) -> list[slice]:
        size = self.config.micro_batch_size or n
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def _lr(self) -> float:
        cfg = self.config
        factor = 1.0
        if cfg.warmup_steps and self.step < cfg.warmup_steps:
            factor = (self.step + 1) / cfg.warmup_steps
        elif cfg.lr_schedule == "linear":
            factor = max(0.0, 1.0 - (self.step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.learning_rate * factor

    def _guarded_step(self, accumulate: Callable[[], float]) -> bool:
        """One optimizer step through ``self.guard``: ``accumulate()`` runs the forward and backward
        passes of the step's micro-batches and returns their summed loss (and diagnostics). A
        non-finite sum turns the gradients into NaN, so the guard skips and counts the step, on every
        rank alike (the gradients are averaged first); returns whether the step was taken."""

        def backward() -> None:
            if not math.isfinite(accumulate()):
                for g in gradients(self.guard.optimizers):
                    g.fill_(math.nan)

        return self.guard.step(0.0, backward)

    def emergency_stop(self, error: NonFiniteError) -> NonFiniteError:
        """Checkpoint the last good state (skipped steps changed nothing) and name it in the error, as
        classic PPO does."""
        where = "no run directory, so no checkpoint was written"
        if self.run_dir is not None:
            where = f"emergency checkpoint of the last good state: {self.save_checkpoint()}"
        return NonFiniteError(
            f"{error}; {where}; lower learning_rate or check the reward functions for inf/NaN"
        )

    # ------------------------------------------------------------------ evaluation, loop
    @torch.no_grad()
    def evaluate(
        self, rows: Sequence[dict[str, Any]] | None = None, batch_size: int = 256
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Greedy completions for held-out rows: ``({"eval/accuracy", "eval/reward"}, per-row records)``."""
        rows = list(rows if rows is not None else self.eval_rows)
        if not rows:
            return {}, []
        gen, texts = self.config.generation, []
        for i in range(0, len(rows), batch_size):
            prompts = [r["prompt"] for r in rows[i : i + batch_size]]
            ids, mask = encode_prompts(self.tokenizer, prompts, gen.max_prompt_length, str(self.device))
            pad = self.tokenizer.pad_token_id
            out = generate(self.model, ids, mask, gen.max_completion_length, self.eos_ids, pad, greedy=True)
            texts += self.tokenizer.batch_decode(
                out.tokens.masked_fill(~out.mask, pad), skip_special_tokens=True
            )
        prompts = [r["prompt"] for r in rows]
        cols = repeat_columns(rows, 1)
        rewards, _ = score_completions(self.reward_funcs, self.config.reward_weights, prompts, texts, cols)
        result = {"eval/reward": float(rewards.nanmean())}
        records = [
            {"prompt": r["prompt"], "completion": t, "reward": float(x)}
            for r, t, x in zip(rows, texts, rewards)
        ]
        if self.accuracy_fn is not None:
            correct = [bool(c) for c in self.accuracy_fn(rows, texts)]
            result["eval/accuracy"] = sum(correct) / len(correct)
            for rec, c in zip(records, correct):
                rec["correct"] = c
        return result, records

    def train(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or ``max_seconds``); returns a summary (accuracy before/after, ...)."""
        from ppokit.llm.loop import run_training

        return run_training(self)

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the model and optimizer in a checkpoint; subclasses add theirs (a value head)."""
        # The reference is the policy training started from; saved so a resume keeps the same KL anchor.
        if self.ref_model is None:
            return {}
        return {f"ref.{k}": v for k, v in self.ref_model.state_dict().items()}

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of ``_extra_state``."""
        ref = {k[4:]: v for k, v in tensors.items() if k.startswith("ref.")}
        if self.ref_model is not None and ref:
            self.ref_model.load_state_dict(ref)

    def save_checkpoint(self, root: str | Path | None = None) -> Path:
        """Write ``checkpoints/step_<12 digits>`` (the shared layout: model + tokenizer via
        save_pretrained in ``model/``, trainer state in safetensors + JSON, one manifest)."""
        root = Path(root) if root is not None else self._require_run_dir() / "checkpoints"
        tensors, optim_tree = ckpt.optimizer_tensors(self.optimizer)
        rng, rng_tree = capture_rng(torch_generators={"sampler": self.generator})
        tensors.update(rng)
        tensors["prompt_order"] = self.order.clone()
        tensors.update(self._extra_state())
        meta = {
            "algo": self.algo,
            "step": self.step,
            "num_tokens": self.num_tokens,
            "cursor": self.cursor,
            "epoch": self.epoch,
            "accuracy_before": self.accuracy_before,
            "optimizer": optim_tree,
            "rng": rng_tree,
            "guard": self.guard.state_dict(),
            "config": self.config.to_dict(),
        }
        keep = self.config.keep_checkpoints
        return ckpt.save_lm_checkpoint(root, self.step, self.model, self.tokenizer, tensors, meta, keep=keep)

    def load_state(self, path: str | Path) -> Path:
        """Restore optimizer, extra state, RNGs and counters from a checkpoint (the model weights are
        loaded with ``from_pretrained`` by ``resume``)."""
        path = ckpt.find_checkpoint(path)
        tensors, meta = ckpt.read_checkpoint(path)
        if meta.get("algo", self.algo) != self.algo:
            raise ConfigError(f"checkpoint {str(path)!r} was written by {meta['algo']}, not {self.algo}")
        ckpt.restore_optimizer(self.optimizer, meta["optimizer"], tensors)
        if "rng" in meta:
            restore_rng(tensors, meta["rng"], torch_generators={"sampler": self.generator})
        else:  # a ppokit 0.1 checkpoint
            ckpt.restore_legacy_rng(tensors, meta["python_rng"], self.generator)
        if "guard" in meta:
            self.guard.load_state_dict(meta["guard"])
        self._load_extra_state(tensors)
        self.order, self.cursor, self.epoch = tensors["prompt_order"], meta["cursor"], meta["epoch"]
        self.step, self.num_tokens = meta["step"], meta["num_tokens"]
        self.accuracy_before = meta.get("accuracy_before")
        return path

    @classmethod
    def resume(
        cls,
        path: str | Path,
        reward_funcs: RewardFn | Sequence[RewardFn],
        train_prompts: Sequence[Any],
        config: Any = None,
        **kwargs: Any,
    ) -> LMTrainer:
        """A trainer continued from the newest complete checkpoint under ``path`` (a run or step dir).

        ``config`` defaults to the one stored in the checkpoint (pass one to change e.g. max_steps).
        """
        from ppokit.llm.models import load_pretrained

        found = ckpt.find_checkpoint(path)
        _, meta = ckpt.read_checkpoint(found)
        config = config or cls.config_class().from_dict(meta["config"])
        model, tokenizer = load_pretrained(found / "model", config.device)
        trainer = cls(model, tokenizer, reward_funcs, train_prompts, config, **kwargs)
        trainer.load_state(found)
        return trainer

    @classmethod
    def config_class(cls) -> Any:  # pragma: no cover - abstract
        """The config dataclass of this trainer."""
        raise NotImplementedError

    # ------------------------------------------------------------------ report
    def _require_run_dir(self) -> Path:
        if self.run_dir is None:
            raise ConfigError(f"this needs run_dir: pass {type(self).__name__}(..., run_dir='runs/my-run')")
        return self.run_dir

    def write_report(self, eval_records: list[dict[str, Any]] | None = None) -> list[Path]:
        """samples.md (held-out prompts and the last training batch) and the plots, in the run dir."""
        run_dir = self._require_run_dir()
        n = self.config.num_samples
        sections = []
        if eval_records:
            sections.append(("Held-out prompts, greedy decoding", eval_records[:n]))
        if self.last_samples:
            sections.append((f"Last training batch (step {self.step}), sampled", self.last_samples[:n]))
        write_samples(run_dir / "samples.md", sections, title=f"Samples - {run_dir.name}")
        return self._plot(run_dir)

    def _plot(self, run_dir: Path) -> list[Path]:
        """The plots of this algorithm's metrics (GRPO's names; a trainer logging others overrides this)."""
        return plot_llm_run(run_dir)
