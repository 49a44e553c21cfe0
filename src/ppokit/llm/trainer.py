"""``LMTrainer``: what every language-model trainer of ppokit shares, apart from its algorithm.

Model/tokenizer set-up, the frozen reference model, the prompt stream, sampling, scoring and greedy
held-out evaluation (``sampling.py``), the learning-rate schedule, the guarded optimizer step
(``ppokit.train.step.GuardedStep``, as on the classic side), checkpoints (save/load/resume,
``ppokit.train`` layout and RNG capture) and the report. ``GRPOTrainer`` adds the four GRPO steps;
``RLHFPPOTrainer`` adds its value head, per-token GAE and KL penalty and keeps all of this (its value
head goes into ``_extra_state`` / ``_load_extra_state``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ppokit import distributed
from ppokit.errors import ConfigError, NonFiniteError
from ppokit.llm import checkpoint as ckpt
from ppokit.llm import sampling
from ppokit.llm.input_checks import as_reward_function, as_rows, check_inputs, is_tokenizer, tokenizer_of
from ppokit.llm.models import eos_token_ids, load_pretrained, prepare_tokenizer
from ppokit.llm.precision import is_peft_model, prepare_model
from ppokit.llm.report import plot_llm_run, write_samples
from ppokit.llm.reward_checks import checked_rewards
from ppokit.llm.rewards import RewardFn, reward_name
from ppokit.llm.trl_compat import TrainerState, dataset_rows, trl_positional
from ppokit.train.precision import autocast as precision_autocast
from ppokit.train.step import GuardedStep, LossScaler

AccuracyFn = Callable[[list[dict[str, Any]], list[str]], Sequence[bool]]


class LMTrainer:
    """Shared state and plumbing; subclasses implement ``train_step() -> dict`` (one step's metrics),
    name their config class (an ``LMConfig``) in ``config_cls``, and where they need them override
    ``_kl_weight()`` and ``_setup()``.

    ``config`` defaults to ``config_class()()``; ``ref_model`` defaults to a frozen copy of ``model``
    taken here, and is built only when ``_kl_weight() > 0``; for a LoRA model (``use_peft``,
    ``peft_config`` or a ``peft.PeftModel``) the reference is the policy with its adapter disabled (no
    copy). ``model_dir``: the directory ``model`` was loaded from; LoRA checkpoints then refer to it
    instead of holding a copy of the frozen base weights.
    """

    algo = "lm"
    config_cls: type | None = None  # the algorithm's config class; None: an LMTrainer that only evaluates

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        reward_funcs: RewardFn | Sequence[RewardFn] | None = None,
        train_prompts: Sequence[Any] | None = None,
        config: Any = None,
        *,
        eval_prompts: Sequence[Any] | None = None,
        accuracy_fn: AccuracyFn | None = None,
        ref_model: Any = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
        peft_config: Any = None,
        model_dir: str | Path | None = None,
        callbacks: Sequence[Any] | None = None,
        args: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
    ):
        # TRL's signature, GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset,
        # processing_class, ...), next to ppokit's (model, tokenizer, reward_funcs, train_prompts, config)
        if tokenizer is not None and not is_tokenizer(tokenizer):  # TRL's positional order
            reward_funcs, args, train_dataset, eval_dataset = trl_positional(
                (tokenizer, reward_funcs, train_prompts, config), args, train_dataset, eval_dataset
            )
            tokenizer, train_prompts, config = None, None, None
        self.config = cfg = (
            config if config is not None else (args if args is not None else self.config_class()())
        )
        cfg.validate()
        self.callbacks = list(callbacks or [])
        train = train_prompts if train_prompts is not None else train_dataset
        if train is None:
            raise ConfigError(f"{type(self).__name__} needs train_prompts= (or TRL's train_dataset=)")
        if reward_funcs is None:
            raise ConfigError(f"{type(self).__name__} needs reward_funcs= (functions, module:function specs "
                              "or reward-model directories)")  # fmt: skip
        # torchrun: every rank trains on its own share of the prompts; only rank 0 evaluates, shows
        # progress and writes the run directory (see ppokit/distributed.py).
        self.dist = distributed.init(cfg.device)
        run_dir = run_dir if run_dir is not None else cfg.output_dir
        evals = eval_prompts if eval_prompts is not None else eval_dataset
        if not self.dist.is_main:
            evals, run_dir, progress = None, None, False
        self.device = torch.device(cfg.device)
        tokenizer = tokenizer if tokenizer is not None else processing_class
        self._set_model(model, tokenizer, peft_config, model_dir)
        self._set_inputs(reward_funcs, train, evals)
        self.reward_logs = sampling.RewardLogs()  # what reward functions log through TRL's keywords
        self.accuracy_fn = accuracy_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self._set_training_state()
        self._set_reference(ref_model)
        self._setup()

    # ------------------------------------------------------------------ set-up, in the order it runs
    def _set_model(self, model: Any, tokenizer: Any, peft_config: Any, model_dir: str | Path | None) -> None:
        """The policy as it trains and its tokenizer (left padding, a pad token) and EOS ids; every
        rank starts from rank 0's weights."""
        cfg = self.config
        if isinstance(model, (str, Path)):  # a local model directory, loaded in torch_dtype (TRL: a name)
            model_dir = model_dir if model_dir is not None else model
            model, tokenizer = load_pretrained(model, cfg.device, cfg.torch_dtype, tokenizer)
        elif tokenizer is None:
            tokenizer = tokenizer_of(model)
        self.model = prepare_model(model, cfg, peft_config, self.device)  # LoRA, precision, checkpointing
        self.is_peft = is_peft_model(self.model)
        self.model_dir = str(Path(model_dir).resolve()) if model_dir is not None else None
        distributed.broadcast_parameters(self.model)
        self.model.train()
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)

    def _set_inputs(self, reward_funcs: Any, train: Any, evals: Any) -> None:
        """The reward functions (wrapped so that their errors name the function and row:
        reward_checks.py) and the training and held-out rows, checked before any work."""
        cfg = self.config
        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        self.reward_funcs = checked_rewards([as_reward_function(f, cfg.device) for f in funcs])
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.rows = as_rows(dataset_rows(train))
        self.eval_rows = as_rows(dataset_rows(evals)) if evals is not None and len(evals) else []
        check_inputs(self.model, self.tokenizer, self.rows, self.eval_rows, cfg.generation)

    def _set_training_state(self) -> None:
        """The optimizer and its guarded step, the sampling generator, the prompt order and the
        counters: what a checkpoint holds besides the model."""
        cfg = self.config
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
        scaler = LossScaler() if cfg.fp16 else None  # float16: dynamic loss scaling (bfloat16 needs none)
        self.guard = GuardedStep([self.optimizer], cfg.max_grad_norm, cfg.nonfinite_stop_after, where, scaler)

    def _set_reference(self, ref_model: Any) -> None:
        """The KL anchor: the policy training starts from (or ``ref_model``), frozen. A KL weight of 0
        needs none: skip the copy and its forward passes entirely. With LoRA the anchor is the base
        model, i.e. the policy with its adapter disabled: no copy of the weights at all."""
        self.ref_model = None
        self.has_reference = self._kl_weight() > 0
        if self.has_reference and (ref_model is not None or not self.is_peft):
            ref = ref_model if ref_model is not None else copy.deepcopy(self.model)
            self.ref_model = ref.to(self.device).eval().requires_grad_(False)

    def autocast(self) -> Any:
        """The autocast context of the forward passes: bfloat16 or float16 with ``bf16``/``fp16``, else
        nothing. The weights stay float32; matmuls run in half precision (TRL/accelerate's mixed
        precision; the classic side's ``bf16`` uses the same context, train/precision.py)."""
        return precision_autocast(self.device, self.config.bf16, self.config.fp16)

    @contextmanager
    def reference(self) -> Iterator[Any]:
        """The reference model for a forward pass: the frozen copy, or the LoRA policy with its adapter
        disabled (the base model's exact outputs, with no second copy of the weights in memory)."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        if not (self.has_reference and self.is_peft):
            raise RuntimeError("this trainer has no reference model (kl_coef is 0)")
        with self.model.disable_adapter():
            yield self.model

    def _warn(self, message: str) -> None:
        """A one-line notice about a setting ppokit changed (shown once per message)."""
        warnings.warn(f"ppokit {self.algo}: {message}", UserWarning, stacklevel=3)

    def _kl_weight(self) -> float:
        """The weight of the algorithm's KL penalty to the reference model (0: no reference model).
        0 here: an ``LMTrainer`` of its own only evaluates (the CLI's warm-start probe)."""
        return 0.0

    def _setup(self) -> None:
        """What a subclass adds to the trainer's state (a value head, ...), after the shared set-up."""

    def train_step(self) -> dict[str, float]:  # pragma: no cover - abstract
        """One step of the algorithm; returns its metrics."""
        raise NotImplementedError

    # ------------------------------------------------------------------ rewards (TRL's keywords)
    @property
    def state(self) -> TrainerState:
        """Where training is, as TRL's ``trainer_state`` (global_step, max_steps, epoch, ...)."""
        epoch = self.epoch + self.cursor / max(len(self.rows), 1)
        return TrainerState(self.step, self.config.max_steps, epoch, self.num_tokens)

    def score(
        self, rows: list[dict[str, Any]], texts: list[str], completion_ids: list[list[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward functions called with every keyword TRL passes (``sampling.score``): ``(total
        [B], per_function [B, F])``."""
        return sampling.score(self, rows, texts, completion_ids)

    def pop_reward_logs(self) -> tuple[dict[str, float], dict[str, list[Any]]]:
        """The metrics and completion-table columns reward functions logged since the last call."""
        return self.reward_logs.pop()

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
        passes of the step's micro-batches and returns their summed loss, which the guard checks
        with the gradients (a non-finite one skips and counts the step, on every rank alike);
        returns whether the step was taken."""
        return self.guard.step(accumulate)

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
        return sampling.evaluate(self, rows if rows is not None else self.eval_rows, batch_size)

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
        return ckpt.save_trainer(self, root)

    def save_model(self, out_dir: str | Path, merged: bool = False) -> Path:
        """``save_pretrained`` of the policy and tokenizer into ``out_dir``: the whole model, or for a
        LoRA model the adapter (TRL's ``save_model``) or, with ``merged=True``, the base with the
        adapter merged into its weights (a plain model ``AutoModelForCausalLM`` loads)."""
        from ppokit.llm.models import save_pretrained

        model = self.model
        if self.is_peft and merged:
            model = copy.deepcopy(self.model).merge_and_unload()
        return save_pretrained(model, self.tokenizer, out_dir)

    def load_state(self, path: str | Path) -> Path:
        """Restore optimizer, extra state, RNGs and counters from a checkpoint (the model weights are
        loaded with ``from_pretrained`` by ``resume``)."""
        return ckpt.load_trainer_state(self, path)

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
        found = ckpt.find_checkpoint(path)
        _, meta = ckpt.read_checkpoint(found)
        config = config or cls.config_class().from_dict(meta["config"])
        model, tokenizer = ckpt.load_checkpoint_model(found, meta, config, kwargs)
        trainer = cls(model, tokenizer, reward_funcs, train_prompts, config, **kwargs)
        trainer.load_state(found)
        return trainer

    @classmethod
    def config_class(cls) -> Any:
        """The config dataclass of this trainer (``config_cls``)."""
        if cls.config_cls is None:  # pragma: no cover - abstract
            raise NotImplementedError
        return cls.config_cls

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
