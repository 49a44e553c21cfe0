"""``LMTrainer``: what every language-model trainer of ppokit shares, apart from its algorithm.

Model/tokenizer set-up, the frozen reference model, the prompt stream, sampling, scoring and greedy
held-out evaluation (``sampling.py``), the learning-rate schedule, the guarded optimizer step
(``ppokit.train.step.GuardedStep``, as on the classic side), checkpoints (save/load/resume,
``ppokit.train`` layout and RNG capture) and the report. ``train()`` runs through the one run loop,
``ppokit.train.loop.RunLoop``, as classic PPO does: ``LMTrainer`` implements its ``Trainable``
protocol (``position``, ``run_step``, ``state_dict``/``load_state_dict``, ``save_checkpoint``).
``GRPOTrainer`` adds the four GRPO steps; ``RLHFPPOTrainer`` adds its value head, per-token GAE and
KL penalty and keeps all of this (its value head goes into ``_extra_state`` / ``_load_extra_state``).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ppokit import distributed
from ppokit.errors import CheckpointError, ConfigError
from ppokit.llm import checkpoint as ckpt
from ppokit.llm import sampling, sharded_checkpoint, sharding
from ppokit.llm.data import dataset_rows
from ppokit.llm.generation import Completions
from ppokit.llm.input_checks import as_reward_function, as_rows, check_inputs, is_tokenizer, tokenizer_of
from ppokit.llm.models import eos_token_ids, load_pretrained, prepare_tokenizer
from ppokit.llm.precision import is_peft_model, prepare_model
from ppokit.llm.report import plot_llm_run, write_samples
from ppokit.llm.reward_checks import RewardFunctionError, checked_rewards, require_scored
from ppokit.llm.rewards import RewardFn, reward_name
from ppokit.llm.trl_compat import Callbacks, TrainerState, trl_positional
from ppokit.tracking import PROCESS_START, ProgressBar, Tracker
from ppokit.train.checkpoint import flatten_state, unflatten_state
from ppokit.train.loop import RunLoop
from ppokit.train.precision import autocast as precision_autocast
from ppokit.train.rng import capture_rng, restore_rng
from ppokit.train.rundir import RunDirLock, config_text, write_config
from ppokit.train.step import GuardedStep, LossScaler

AccuracyFn = Callable[[list[dict[str, Any]], list[str]], Sequence[bool]]
COMPLETIONS = "completions.jsonl"  # the completions table: one JSON object per sampled completion
# the logs of a run directory and their step column: trimmed to the checkpoint's step on resume
LOGS = {"metrics.csv": "step", COMPLETIONS: "step"}
COUNTERS = ("step", "num_tokens", "cursor", "epoch", "accuracy_before")  # in a checkpoint's meta.json


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
    progress_metric = "reward"  # the metric the progress bar shows
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
        # issue 31: device auto (the default) is this rank's own GPU where there is one, else the CPU;
        # cfg.device keeps what the user asked for, so the saved config resumes on another machine
        self.device = distributed.resolve_device(cfg.device, self.dist.local_rank)
        announce = self.config_cls is not None and (self.dist.enabled or progress)  # quiet alone: no-progress
        run_dir = run_dir if run_dir is not None else cfg.output_dir
        evals = eval_prompts if eval_prompts is not None else eval_dataset
        if not self.dist.is_main:
            evals, run_dir, progress = None, None, False
        tokenizer = tokenizer if tokenizer is not None else processing_class
        self._set_model(model, tokenizer, peft_config, model_dir)
        self._set_inputs(reward_funcs, train, evals)
        # whether held-out evaluations run: rank 0's answer on every rank (under fsdp the evaluation
        # gathers the sharded weights, so every rank takes part in it; only rank 0 has rows)
        self.evaluates = bool(distributed.from_rank0(bool(self.eval_rows)))
        self.reward_logs = sampling.RewardLogs()  # what reward functions log through TRL's keywords
        self.accuracy_fn = accuracy_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self._set_reference(ref_model)
        self._build_models()
        self._shard()
        self._set_training_state()
        self._setup()
        # -- the run (not training state): run directory, checkpoint cadence, signals --------------------
        self.stop_requested: int | None = None  # a signal number: stop cleanly after this step
        self._budget: tuple[float, float] | None = None  # (start, max_seconds) while train() runs
        self._out_of_time = False  # whether _budget was spent at the end of the last step
        # the last step's evaluation; None until it ran (a rank without held-out rows gets ({}, []) from it)
        self._final: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
        self._last_metrics: dict[str, Any] = {}  # the last step's metrics row
        hint = "; lower learning_rate or check the reward functions for inf/NaN"
        self.run_loop = RunLoop(self, cfg.checkpoint_every, cfg.checkpoint_every_seconds, LOGS, hint)
        if announce:  # once all is checked: a failed start's error stays the only line on stderr
            strategy = getattr(getattr(cfg, "distributed", None), "strategy", None)
            distributed.announce(f"ppokit {self.algo}", self.device, strategy)

    # ------------------------------------------------------------------ set-up, in the order it runs
    def _set_model(self, model: Any, tokenizer: Any, peft_config: Any, model_dir: str | Path | None) -> None:
        """The policy as it trains and its tokenizer (left padding, a pad token) and EOS ids; every
        rank starts from rank 0's weights."""
        cfg = self.config
        if isinstance(model, (str, Path)):  # a local model directory, loaded in torch_dtype (TRL: a name)
            model_dir = model_dir if model_dir is not None else model
            model, tokenizer = load_pretrained(model, self.device, cfg.torch_dtype, tokenizer)
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
        self.reward_funcs = checked_rewards([as_reward_function(f, self.device) for f in funcs])
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.rows = as_rows(dataset_rows(train))
        self.eval_rows = as_rows(dataset_rows(evals)) if evals is not None and len(evals) else []
        check_inputs(self.model, self.tokenizer, self.rows, self.eval_rows, cfg, self.dist.world_size)

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
        self.guard = GuardedStep(
            [self.optimizer], cfg.max_grad_norm, cfg.nonfinite_stop_after, where, scaler, reduced=self.sharded
        )  # FSDP2 averages the gradients in the backward pass: the guard must not average them again

    def _build_models(self) -> None:
        """The modules a subclass adds that train or run beside the policy (a critic, a value head),
        built here, before ``_shard`` (a sharded model cannot be copied); ``_shard_parts`` names them."""

    def _shard_parts(self) -> list[tuple[Any, bool, bool]]:
        """``(module, per_block, half_precision)`` for each module besides the policy and the reference
        that ``distributed.strategy=fsdp`` shards (a subclass's critic and value head)."""
        return []

    def _shard(self) -> None:
        """``distributed.strategy=fsdp``: shard the policy, the reference copy and ``_shard_parts()``
        over the ranks with FSDP2 (``sharding.py``) before the optimizer is built on the shards. One
        process is a group of one: the same code path and the same sharded checkpoints, so a run can
        resume at another number of ranks."""
        cfg = self.config
        self.sharded = cfg.distributed.strategy == "fsdp"
        self.mesh = self.generation_model = None
        if not self.sharded:
            return
        if cfg.distributed.cpu_offload and self.device.type != "cuda":
            raise ConfigError(
                f"distributed.cpu_offload=true moves shards from a GPU to CPU memory; on device "
                f"{self.device} there is nothing to offload (use it with device cuda, or set it false)"
            )
        distributed.ensure_process_group(self.device)
        self.mesh = sharding.device_mesh(self.device, self.dist.world_size)
        # sampling runs on an unsharded copy whose weights exist only while it samples (sharding.py)
        self.generation_model = sharding.release(copy.deepcopy(self.model).requires_grad_(False))
        sharding.shard_modules(self.model, self.mesh, cfg)
        if self.ref_model is not None:
            sharding.shard_modules(self.ref_model, self.mesh, cfg)
        for module, per_block, half in self._shard_parts():
            sharding.shard_modules(module, self.mesh, cfg, blocks=per_block, half_precision=half)

    @property
    def sharded_checkpoints(self) -> bool:
        """Whether every rank writes part of each checkpoint (fsdp): ``RunLoop`` then saves on all ranks."""
        return self.sharded

    def _set_reference(self, ref_model: Any) -> None:
        """The KL anchor: the policy training starts from (or ``ref_model``), frozen. A KL weight of 0
        needs none: skip the copy and its forward passes entirely. With LoRA the anchor is the base
        model, i.e. the policy with its adapter disabled: no copy of the weights at all.

        A copy of a model that came from a directory (``model_dir``) is not written into checkpoints:
        ``reference_dir`` names the directory and a resume reads it again (``ckpt.reference_model``);
        only a reference nothing on disk holds (a model built in code, a ``ref_model`` passed in) is saved.
        """
        self.ref_model = None
        self.reference_dir: str | None = None
        self.has_reference = self._kl_weight() > 0
        if self.has_reference and (ref_model is not None or not self.is_peft):
            if ref_model is None and self.model_dir is not None:
                self.reference_dir = self.model_dir
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
        # one list for the trainer's life: each access built a new state, so log_history stayed empty
        history = self.__dict__.setdefault("log_history", [])
        return TrainerState(self.step, self.config.max_steps, epoch, self.num_tokens, history)

    def sampler(self) -> sampling.Sampler:
        """What ``sampling.sample`` reads from this trainer: its model, tokenizer, generation settings,
        EOS ids, device, generator and autocast context."""
        gen, tok = self.config.generation, self.tokenizer
        model = self.generation_model if self.sharded else self.model
        return sampling.Sampler(model, tok, gen, self.eos_ids, self.device, self.generator, self.autocast)

    @contextmanager
    def _generation_weights(self) -> Iterator[None]:
        """fsdp: ``generation_model`` holds the policy's current weights, all-gathered from the shards,
        for the duration (a collective: every rank enters it, to sample or evaluate); released after."""
        if not self.sharded:
            yield
            return
        self.generation_model.load_state_dict(sharding.full_state_dict(self.model), assign=True)
        sharding.tie_weights(self.generation_model)  # assign=True gave tied weights one tensor each
        try:
            yield
        finally:
            sharding.release(self.generation_model)

    def sample(
        self, rows: list[dict[str, Any]], group: int = 1, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Completions, list[str]]:
        """``sampling.sample`` with this trainer's policy: ``(prompt_ids, prompt_mask, completions,
        texts)``. Sharded (fsdp): with ``generation_model`` (``_generation_weights``; every rank at once)."""
        with self._generation_weights():
            return sampling.sample(self.sampler(), rows, group, greedy)

    def forward(self, model: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(model, *args, **kwargs)``: a function of a model that calls its parts (trunk, output
        layer) rather than its ``forward``, run inside the sharded model's forward (``sharding.call``)."""
        return sharding.call(model, fn, *args, **kwargs)

    def score_samples(
        self, rows: list[dict[str, Any]], out: Completions, texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``score`` of a step's sampled completions, given their token ids; a step in which no
        function scored any completion stops the run (``require_scored``: there is no signal to learn)."""
        rewards, per_fn = self.score(rows, texts, sampling.completion_token_ids(out))
        require_scored(rewards, self.reward_names, self.step + 1)
        return rewards, per_fn

    def score(
        self, rows: list[dict[str, Any]], texts: list[str], completion_ids: list[list[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward functions called with every keyword TRL passes (``sampling.score``): ``(total
        [B], per_function [B, F])``."""
        weights = self.config.reward_weights
        return sampling.score(
            self.reward_funcs, weights, rows, texts, completion_ids, self.state, self.reward_logs
        )

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
        warmup = cfg.num_warmup_steps  # warmup_steps < 1 is a fraction of max_steps, as TRL (issue 34)
        factor = 1.0
        if warmup and self.step < warmup:
            factor = (self.step + 1) / warmup
        elif cfg.lr_schedule == "linear":
            factor = max(0.0, 1.0 - (self.step - warmup) / max(1, cfg.max_steps - warmup))
        return cfg.learning_rate * factor

    def _guarded_step(self, accumulate: Callable[[], float]) -> bool:
        """One optimizer step through ``self.guard``: ``accumulate()`` runs the forward and backward
        passes of the step's micro-batches and returns their summed loss, which the guard checks
        with the gradients (a non-finite one skips and counts the step, on every rank alike);
        returns whether the step was taken."""
        return self.guard.step(accumulate)

    # ------------------------------------------------------------------ evaluation, loop
    @torch.no_grad()
    def evaluate(
        self, rows: Sequence[dict[str, Any]] | None = None, batch_size: int = 256
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Greedy completions for held-out rows: ``({"eval/accuracy", "eval/reward"}, per-row records)``."""
        rows = rows if rows is not None else self.eval_rows
        with self._generation_weights():  # fsdp: every rank takes part; only rank 0 has rows to evaluate
            result = sampling.evaluate(self.sampler(), self.score, self.accuracy_fn, rows, batch_size)
        self.pop_reward_logs()  # what the rewards log during evaluation is not a training step's
        return result

    def set_run_dir(self, run_dir: str | Path, lock: RunDirLock | None = None) -> None:
        """Write this run's logs and checkpoints under ``run_dir`` from the next ``train()``. ``lock``:
        its ``RunDirLock`` when the caller already claimed it (the command line does, before it builds
        anything else); without one, ``train()`` claims the directory for a new run (refused when it
        holds one) or, for a resumed trainer, locks it and trims its logs to the checkpoint's step."""
        self.run_dir = Path(run_dir)
        if lock is not None:
            self._attach(lock)

    def _attach(self, lock: RunDirLock | None = None) -> None:
        """Take the run directory: lock (or claim) it, trim a resumed run's logs, open the sinks
        (metrics.csv, TensorBoard and wandb as ``report_to`` says) and write its config.yaml."""
        cfg, run_dir = self.config, self.run_dir
        resumed = self.step > 0
        hint = f"{type(self).__name__}.resume({str(run_dir)!r}, ...)"
        claim_with = None if lock is not None or resumed else (config_text(cfg), hint)
        self.run_loop.attach(
            run_dir,
            lock=lock,
            claim_with=claim_with,
            resume_step=self.step if resumed else None,
            **Tracker.options(cfg),
        )
        # a resume's overrides (max_steps=...) included; atomic, and recorded so that a later resume
        # tells this rewrite from the user's edit (train/rundir.py, issue 34)
        write_config(run_dir, config_text(cfg))

    def train(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or ``max_seconds``); returns a summary dict (accuracy before and
        after, steps, the checkpoint, ...), through the one run loop (``ppokit.train.loop``).

        Held-out accuracy is measured before the first step (kept across resumes), every
        ``eval_every`` steps and after the last one, which is logged in the last step's row: one
        metrics row per step. Checkpoints every ``checkpoint_every`` steps and/or
        ``checkpoint_every_seconds`` of wall-clock (300 by default) and at the end; a
        ``NonFiniteError`` (too many non-finite steps in a row) or a ``RewardFunctionError`` writes a
        checkpoint first. ``stop_requested`` (a signal number, set by ``train/signals.py``) ends the
        run after the current step with a checkpoint and ``interrupted_by`` in the summary. The run
        directory is locked while training: a second process writing it gets a one-line
        ``RunDirError``."""
        if self.run_dir is not None and not self.run_loop.attached:
            self._attach()
        try:
            try:
                return self._train()
            except RewardFunctionError as e:  # the work so far is kept: fix the function, then resume
                if not self.run_loop.attached:
                    raise
                path = self.run_loop.save()
                raise RewardFunctionError(
                    f"{e}; checkpoint of step {self.step}: {path} (fix the function, then `ppokit resume "
                    f"{self.run_dir}`)"
                ) from None
        finally:
            self.run_loop.detach()

    def _train(self) -> dict[str, Any]:
        cfg = self.config
        summary = self._evaluate_before()
        start = time.perf_counter()
        self._budget, self._out_of_time = (start, cfg.max_seconds), False
        self._final, self._last_metrics = None, {}
        headline = self.progress_metric
        callbacks = _TRLHooks(Callbacks(self.callbacks, self))  # TRL's TrainerCallback, plain functions
        bar = ProgressBar(cfg.max_steps, self.algo, headline, enabled=self.progress, unit="steps")
        try:
            with bar:
                ended = self.run_loop.run(callbacks, bar, headline)
        finally:
            self._budget = None
        train_seconds = time.perf_counter() - start
        last_reward = self._last_metrics.get(headline)
        if ended == "signal":  # stopped on a step boundary with a checkpoint, no final evaluation
            summary.update(
                {"steps": self.step, "interrupted_by": self.stop_requested, "last_reward": last_reward}
            )
            if self.run_loop.writes:  # fsdp: every rank writes its shards
                path = self.run_loop.checkpoint()
                if self.run_loop.attached:
                    summary["checkpoint"], summary["run_dir"] = str(path), str(self.run_dir)
            return summary
        return self._finish(summary, last_reward, train_seconds)

    def _time_up(self) -> bool:
        """Whether ``max_seconds`` of this ``train()`` were spent when the last step ended
        (``_check_time``)."""
        return self._out_of_time

    def _check_time(self) -> None:
        """Decide, once per step and on every rank at the same point, whether ``max_seconds`` are
        spent: rank 0's clock decides for all (each rank reading its own clock, one ran a final
        evaluation, a collective under fsdp, while the other started another step: a hang)."""
        spent = self._budget is not None and bool(self._budget[1])
        spent = spent and time.perf_counter() - self._budget[0] >= self._budget[1]
        self._out_of_time = bool(distributed.from_rank0(spent))

    def position(self) -> tuple[int, int]:
        """``(steps done, max_steps)``, or ``(steps done, steps done)`` once ``max_seconds`` is spent:
        where ``RunLoop`` stands (the ``Trainable`` protocol)."""
        return self.step, self.step if self._time_up() else self.config.max_steps

    def run_step(self) -> dict[str, Any]:
        """One step of the run (the ``Trainable`` protocol): ``train_step()``, what the reward
        functions logged, the completions table, the held-out evaluation when due (every
        ``eval_every`` steps and at the last: by count, or because the time is up, checked here so the
        final evaluation lands in this step's row) and the metrics row (every ``log_every`` steps and
        at the last)."""
        cfg, tracker = self.config, self.run_loop.tracker
        metrics = self.train_step()
        self._check_time()
        logged, columns = self.pop_reward_logs()  # log_metric / log_extra of the reward functions
        metrics.update(logged)
        if tracker is not None and self.step % cfg.log_every == 0:
            samples = self.last_samples[: cfg.num_samples]
            rows = [
                {"step": self.step, **sample, **{k: v[i] for k, v in columns.items() if i < len(v)}}
                for i, sample in enumerate(samples)
            ]
            tracker.log_jsonl(COMPLETIONS, rows)
        last = self.step >= cfg.max_steps or self._time_up()
        if self.evaluates and (last or (cfg.eval_every and self.step % cfg.eval_every == 0)):
            evaluated = self.evaluate()
            metrics.update(evaluated[0])
            if last:
                self._final = evaluated
        if last or self.step % cfg.log_every == 0:
            self._log(self.step, metrics)
        self._last_metrics = metrics
        return metrics

    def _log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run_loop.log(step, {"step": step, **metrics, "time/elapsed_s": time.time() - PROCESS_START})

    def _evaluate_before(self) -> dict[str, Any]:
        """The summary's start: held-out accuracy before the first step, logged at step 0 (a resumed
        run keeps the one it measured then)."""
        summary: dict[str, Any] = {}
        if self.evaluates and self.step == 0:
            before, _ = self.evaluate()
            self.accuracy_before = before.get("eval/accuracy")
            summary["reward_before"] = before.get("eval/reward")
            self._log(0, before)
        return summary

    def _finish(self, summary: dict[str, Any], last_reward: Any, train_seconds: float) -> dict[str, Any]:
        """The summary of a run that ended by steps, time or a callback: accuracy before and after,
        and, with a run directory, the final checkpoint and the report (samples.md, plots)."""
        evaluated, records = self._final or ({}, [])
        if self.evaluates:
            # no step ran (already at max_steps, or max_seconds spent before the first)
            if self._final is None:
                evaluated, records = self.evaluate()
            summary.update(
                {
                    "accuracy_before": self.accuracy_before,
                    "accuracy_after": evaluated.get("eval/accuracy"),
                    "reward_after": evaluated.get("eval/reward"),
                }
            )
        summary.update(
            {
                "steps": self.step,
                "train_seconds": round(train_seconds, 2),
                "last_reward": last_reward,
                "num_tokens": self.num_tokens,
            }
        )
        if self.run_loop.attached:
            self.run_loop.close_sinks()
        if self.run_loop.writes:  # fsdp: every rank writes its shards of the final checkpoint
            summary["checkpoint"] = str(self.run_loop.checkpoint())
        if self.run_loop.attached:
            summary["plots"] = [str(p) for p in self.write_report(records)]
            summary["run_dir"] = str(self.run_dir)
        return summary

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the model and optimizer in a checkpoint; subclasses add theirs (a value head)."""
        # The reference is the policy training started from; saved so a resume keeps the same KL anchor
        # (unless a resume reads it from its directory again: reference_dir)
        if self.ref_model is None or self.reference_dir is not None:
            return {}
        return {f"ref.{k}": v for k, v in self.ref_model.state_dict().items()}

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of ``_extra_state``."""
        ref = {k[4:]: v for k, v in tensors.items() if k.startswith("ref.")}
        if self.ref_model is not None and ref:
            self.ref_model.load_state_dict(ref)

    def state_dict(self) -> dict[str, Any]:
        """The training state besides the model's weights (those are written with ``save_pretrained``):
        optimizer, step guard, RNGs (the sampler's among them), prompt order, counters and the extra
        state of the algorithm (reference model, value head: ``_extra_state``)."""
        rng, rng_tree = capture_rng(torch_generators={"sampler": self.generator})
        return {
            "optimizer": self.optimizer.state_dict(),
            "guard": self.guard.state_dict(),
            "rng": {"tensors": rng, "tree": rng_tree},
            "prompt_order": self.order.clone(),
            "extra": self._extra_state(),
            "counters": {
                "step": self.step,
                "num_tokens": self.num_tokens,
                "cursor": self.cursor,
                "epoch": self.epoch,
                "accuracy_before": self.accuracy_before,
            },
        }  # the keys of "counters" are COUNTERS

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore ``state_dict``; ``sd["rng"]`` may instead hold ppokit 0.1's ``legacy`` RNG states."""
        try:
            self.optimizer.load_state_dict(sd["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"optimizer state does not fit this model: {e}") from None
        rng = sd["rng"]
        if "legacy" in rng:  # a ppokit 0.1 checkpoint
            ckpt.restore_legacy_rng(rng["tensors"], rng["legacy"], self.generator)
        else:
            restore_rng(rng["tensors"], rng["tree"], torch_generators={"sampler": self.generator})
        if sd.get("guard") is not None:
            self.guard.load_state_dict(sd["guard"])
        self._load_extra_state(sd["extra"])
        c = sd["counters"]
        self.order, self.cursor, self.epoch = sd["prompt_order"], c["cursor"], c["epoch"]
        self.step, self.num_tokens = c["step"], c["num_tokens"]
        self.accuracy_before = c.get("accuracy_before")

    def save_checkpoint(self, root: str | Path | None = None) -> Path:
        """Write ``checkpoints/step_<12 digits>`` (the shared layout: model + tokenizer via
        save_pretrained in ``model/``, ``state_dict()`` in safetensors + JSON, one manifest; the
        ``Trainable`` protocol)."""
        if self.sharded:  # every rank writes its shards (sharded_checkpoint.py); rank 0 names the root
            if root is None and self.dist.is_main:
                root = self._require_run_dir() / "checkpoints"
            return sharded_checkpoint.save(self, root)
        root = Path(root) if root is not None else self._require_run_dir() / "checkpoints"
        sd = self.state_dict()
        tensors, optim_tree = flatten_state("optim.", sd["optimizer"])
        tensors.update(sd["rng"]["tensors"])
        tensors["prompt_order"] = sd["prompt_order"]
        tensors.update(sd["extra"])
        meta = {**self.checkpoint_meta(), "optimizer": optim_tree, "rng": sd["rng"]["tree"]}
        base = None
        if self.is_peft:  # model/ holds the adapter; the frozen base is named, or copied in base_model/
            meta["peft"] = {"base_model": self.model_dir}
            if self.model_dir is None:
                base = copy.deepcopy(self.model).unload()  # the base weights without the LoRA layers
        keep = self.config.keep_checkpoints
        return ckpt.save_lm_checkpoint(
            root, self.step, self.model, self.tokenizer, tensors, meta, keep=keep, base_model=base
        )

    def checkpoint_meta(self) -> dict[str, Any]:
        """What ``meta.json`` of every checkpoint holds besides the optimizer and RNG states: the
        algorithm, the counters, the step guard's counters and the config."""
        counters = {k: getattr(self, k) for k in COUNTERS}
        meta = {
            "algo": self.algo,
            **counters,
            "guard": self.guard.state_dict(),
            "config": self.config.to_dict(),
            "holds": self.checkpoint_contents(),
        }
        if self.reference_dir is not None:
            meta["reference"] = ckpt.reference_record(self.reference_dir)
        return meta

    def checkpoint_contents(self) -> dict[str, str]:
        """What a checkpoint of this trainer holds, part by part, in words and sizes (``meta.json``'s
        ``holds``; docs/scaling-out.md): a resume needs all of it, an export only the policy."""
        size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        moments = 2 * sum(p.numel() * 4 for p in trainable)  # AdamW: exp_avg and exp_avg_sq in float32
        mib = lambda n: f"{n / 2**20:.1f} MiB"
        where = "sharded over the ranks (shards/)" if self.sharded else "model/"
        out = {
            "policy": f"{mib(size(self.model))} of weights{' (whole)' if not self.sharded else ''}, {where}",
            "optimizer": f"AdamW moments of {len(trainable)} trainable tensors, ~{mib(moments)} in all",
        }
        if self.ref_model is None:
            out["reference"] = "the LoRA policy with its adapter disabled" if self.has_reference else "none"
        elif self.reference_dir is not None:
            out["reference"] = f"not stored: read again from {self.reference_dir} on resume"
        else:
            out["reference"] = f"a frozen copy, {mib(size(self.ref_model))}"
        out.update({name: mib(size(m)) for name, m in self._extra_modules().items()})
        return out

    def checkpoint_modules(self) -> torch.nn.ModuleDict:
        """The modules of a sharded checkpoint by name: the policy, the reference copy (when there is
        one), and what ``_extra_modules`` adds (a critic, a value head)."""
        parts = {"policy": self.model, **self._extra_modules()}
        if self.ref_model is not None and self.reference_dir is None:
            parts["reference"] = self.ref_model
        return torch.nn.ModuleDict(parts)

    def _extra_modules(self) -> dict[str, torch.nn.Module]:
        """Modules a subclass adds to sharded checkpoints (its ``_extra_state`` holds them otherwise)."""
        return {}

    def save_model(self, out_dir: str | Path, merged: bool = False) -> Path:
        """``save_pretrained`` of the policy and tokenizer into ``out_dir``: the whole model, or for a
        LoRA model the adapter (TRL's ``save_model``) or, with ``merged=True``, the base with the
        adapter merged into its weights (a plain model ``AutoModelForCausalLM`` loads)."""
        from ppokit.llm.models import save_pretrained

        if self.sharded:  # fsdp: the whole weights gathered into the generation copy (every rank calls)
            with self._generation_weights():
                if not self.dist.is_main:
                    return Path(out_dir)
                model = self.generation_model
                if self.is_peft and merged:
                    model = copy.deepcopy(model).merge_and_unload()
                return save_pretrained(model, self.tokenizer, out_dir)
        model = self.model
        if self.is_peft and merged:
            model = copy.deepcopy(self.model).merge_and_unload()
        return save_pretrained(model, self.tokenizer, out_dir)

    def load_state(self, path: str | Path) -> Path:
        """Restore optimizer, extra state, RNGs and counters from the checkpoint at ``path`` (either
        layout; the model weights are loaded with ``from_pretrained`` by ``resume``)."""
        path = ckpt.find_checkpoint(path)
        tensors, meta = ckpt.read_checkpoint(path)
        if meta.get("algo", self.algo) != self.algo:
            raise ConfigError(f"checkpoint {str(path)!r} was written by {meta['algo']}, not {self.algo}")
        if "sharded" in meta:  # distributed.strategy=fsdp: weights and optimizer in DCP shards
            sharded_checkpoint.load(self, path, tensors, meta)
            if meta.get("guard") is not None:
                self.guard.load_state_dict(meta["guard"])
            self.order = tensors["prompt_order"]
            for k in COUNTERS:
                setattr(self, k, meta.get(k))
            return path
        if self.sharded:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with distributed.strategy=ddp; resume it with ddp "
                "(--set distributed.strategy=ddp), or start the sharded run from its model/ directory"
            )
        if "rng" in meta:
            rng = {"tensors": tensors, "tree": meta["rng"]}
        else:  # a ppokit 0.1 checkpoint
            rng = {"tensors": tensors, "legacy": meta["python_rng"]}
        self.load_state_dict(
            {
                "optimizer": unflatten_state(meta["optimizer"], tensors),
                "guard": meta.get("guard"),
                "rng": rng,
                "prompt_order": tensors["prompt_order"],
                "extra": tensors,
                "counters": {
                    k: meta.get(k) for k in ("step", "num_tokens", "cursor", "epoch", "accuracy_before")
                },
            }
        )
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
        found = ckpt.find_checkpoint(path)
        _, meta = ckpt.read_checkpoint(found)
        config = config or cls.config_class().from_dict(meta["config"])
        model, tokenizer = ckpt.load_checkpoint_model(found, meta, config, kwargs)
        if "reference" in meta and kwargs.get("ref_model") is None:  # the KL anchor from its directory
            kwargs["ref_model"] = ckpt.reference_model(meta["reference"], config)
        trainer = cls(model, tokenizer, reward_funcs, train_prompts, config, **kwargs)
        if "reference" in meta:  # and its later checkpoints do not store it either
            trainer.reference_dir = meta["reference"]["model_dir"]
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


class _TRLHooks:
    """The LM side's callbacks (``trl_compat.Callbacks``: TRL ``TrainerCallback`` objects and plain
    functions) as the run loop's hooks (``train/callbacks.py``), so both sides' callbacks go through
    one loop."""

    def __init__(self, callbacks: Callbacks):
        self.callbacks = callbacks

    def on_start(self, trainer: LMTrainer) -> None:
        """TRL's ``on_train_begin``."""
        self.callbacks.begin()

    def on_step_begin(self, trainer: LMTrainer) -> None:
        """TRL's ``on_step_begin``."""
        self.callbacks.step_begin()

    def on_step(self, trainer: LMTrainer, metrics: dict[str, Any]) -> bool:
        """TRL's ``on_step_end`` and ``on_log``; False when a callback asked to stop."""
        return not self.callbacks.step_end(metrics)

    def on_save(self, trainer: LMTrainer, path: Path) -> None:
        """TRL's ``on_save`` (it never fired before issue 34)."""
        self.callbacks.saved()

    def on_end(self, trainer: LMTrainer) -> None:
        """TRL's ``on_train_end``."""
        self.callbacks.end()
