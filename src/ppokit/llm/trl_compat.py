"""What lets a TRL GRPO script run on ppokit with its imports changed: TRL's config keys that are not
plain aliases (``per_device_train_batch_size``, ``steps_per_generation``, ``adam_beta1``, ...), the
``trainer_state`` reward functions receive, TRL ``TrainerCallback`` objects next to ppokit's
``callback(trainer, metrics)`` functions, and TRL's positional argument order. Datasets
(``datasets.Dataset``, lists, JSONL, JSON and Parquet files) are read by ``ppokit.llm.data``.

Plain renames (``beta`` -> ``kl_coef``, ``logging_steps`` -> ``log_every``, ...) are in
``ppokit.config.ALIASES``; this file holds the keys whose translation needs a rule. A TRL key that
ppokit has no counterpart for is refused by name (fail closed), except the few listed in
``TRL_NOOP`` whose TRL meaning is what ppokit always does.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppokit.config import ALIASES, short
from ppokit.errors import ConfigError

if TYPE_CHECKING:  # the trainer imports this module; its type is all this one needs
    from ppokit.llm.trainer import LMTrainer

# TRL keys that describe what ppokit does anyway (value -> accepted?); anything else is refused.
TRL_NOOP: dict[str, Callable[[Any], bool]] = {
    "remove_unused_columns": lambda v: True,  # ppokit always passes every column to the rewards
    "log_completions": lambda v: True,  # ppokit always writes completions.jsonl and samples.md
    "shuffle_dataset": lambda v: v in (True, None),  # ppokit shuffles with the seed
    "push_to_hub": lambda v: not v,
    "save_strategy": lambda v: v in ("steps", "no"),  # "no" sets checkpoint_every=0 (end only)
    "logging_strategy": lambda v: v == "steps",
    "eval_strategy": lambda v: v in ("steps", "no"),
    "logging_dir": lambda v: True,  # TensorBoard events go to RUN_DIR/tb
    "run_name": lambda v: True,
    "overwrite_output_dir": lambda v: True,
    "do_train": lambda v: True,
    "use_vllm": lambda v: not v,
    "num_completions_to_print": lambda v: True,
    "ddp_find_unused_parameters": lambda v: True,
    "dataloader_num_workers": lambda v: True,
}
NOOP_HELP = {
    "use_vllm": "vLLM generation is not built in ppokit (it needs a CUDA machine to be tested); "
    "generation runs on the training model",
    "push_to_hub": "ppokit does not upload anything; save_model() writes a local directory",
}
# What each accepted no-op key means in ppokit, for the one-time notice that names it (issue 34: no-op
# TRL keys were accepted without a word).
NOOP_NOTICE = {
    "remove_unused_columns": "every column of a prompt row is passed to the reward functions",
    "log_completions": "completions.jsonl and samples.md are always written",
    "shuffle_dataset": "prompts are always shuffled with the seed",
    "save_strategy": "checkpoints follow checkpoint_every / checkpoint_every_seconds",
    "logging_strategy": "a metrics row every log_every steps",
    "eval_strategy": "held-out evaluation every eval_every steps",
    "logging_dir": "TensorBoard events go to RUN_DIR/tb",
    "run_name": "the run directory's name names the run",
    "overwrite_output_dir": "a run directory that holds checkpoints is refused; resume it instead",
    "do_train": "train() trains",
    "num_completions_to_print": "samples.md holds num_samples rows",
    "ddp_find_unused_parameters": "ppokit averages gradients itself under torchrun",
    "dataloader_num_workers": "prompt rows are read in the training process",
}

# TRL (transformers TrainingArguments) keys ppokit does not have, with what to do instead: "did you
# mean" guessed from spelling suggested n_epochs for num_train_epochs and keep_checkpoints for
# resume_from_checkpoint, which mean something else entirely (issue 34).
TRL_UNSUPPORTED = {
    "num_train_epochs": "ppokit counts training in max_steps (generation batches of prompts_per_step "
    "prompts): set max_steps = epochs * rows / prompts_per_step; n_epochs is something else (passes "
    "over one batch, TRL's num_iterations)",
    "resume_from_checkpoint": "resume with `ppokit resume RUN_DIR` or GRPOTrainer.resume(RUN_DIR); "
    "keep_checkpoints is how many checkpoints a run keeps",
    "adam_epsilon": "ppokit's AdamW uses torch's eps=1e-8 (TRL's default too); adv_eps is the advantage "
    "epsilon, not Adam's",
    "optim": "ppokit trains with torch.optim.AdamW only",
    "lr_scheduler_kwargs": "lr_schedule is constant or linear, with no arguments",
    "per_device_eval_batch_size": "held-out prompts are evaluated greedily in batches of 256",
    "gradient_checkpointing_kwargs": "gradient_checkpointing=true is always non-reentrant",
    "sync_ref_model": "the reference model stays the initial policy (no TR-DPO style sync)",
    "ref_model_sync_steps": "the reference model stays the initial policy (no TR-DPO style sync)",
    "ref_model_mixup_alpha": "the reference model stays the initial policy (no TR-DPO style sync)",
    "torch_compile": "ppokit does not compile the model",
    "deepspeed": "ppokit runs under torchrun with its own gradient averaging, not DeepSpeed",
    "fsdp_config": "ppokit shards each transformer block (the model's _no_split_modules); its settings are "
    "distributed.cpu_offload and distributed.reshard_after_forward",
    "use_liger_loss": "ppokit computes the loss in chunks itself (logprob_chunk_size)",
    "load_best_model_at_end": "the run keeps its newest checkpoints; evaluate them with ppokit eval",
    "max_grad_value": "ppokit clips the gradient norm (max_grad_norm), not values",
}

# TRL keys whose presence means a config was written for TRL: the defaults notice names ppokit's
# defaults that differ from TRL's only for such configs.
TRL_RULE_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "generation_batch_size",
    "adam_beta1",
    "adam_beta2",
    "use_cpu",
    "model_init_kwargs",
    "warmup_ratio",
)
_NOTIFIED: set[str] = set()  # messages already shown by notice_once (once per process)


def notice_once(message: str) -> None:
    """``message`` as a UserWarning, the first time this process sees it."""
    if message not in _NOTIFIED:
        _NOTIFIED.add(message)
        warnings.warn(message, UserWarning, stacklevel=4)


def check_trl_step_count(data: dict[str, Any], optimizer_steps_per_batch: int, trl: list[str]) -> None:
    """Refuse ``max_steps`` next to TRL keys that make one generation batch several optimizer steps.

    TRL's ``max_steps`` counts optimizer steps; ppokit's counts generation batches, each trained
    ``n_epochs`` (TRL's ``num_iterations``) x ``steps_per_generation`` optimizer steps. With TRL's
    ``num_iterations=2, max_steps=2`` ppokit would do 4 optimizer steps where TRL does 2 (issue 34), so
    the combination is refused with the ppokit spelling of what TRL means. ``trl``: the TRL keys given
    that set the steps per batch."""
    if "max_steps" not in data or optimizer_steps_per_batch <= 1 or trl in ([], ["steps_per_generation"]):
        return  # alone, steps_per_generation is ppokit's own key (optimizer steps per batch)
    steps = data["max_steps"]
    ppokit_steps = steps // optimizer_steps_per_batch if isinstance(steps, int) else steps
    raise ConfigError(
        f"max_steps={short(steps)} with TRL's {', '.join(trl)} is ambiguous: TRL counts optimizer steps, "
        f"ppokit counts generation batches, each trained {optimizer_steps_per_batch} optimizer steps here "
        f"(n_epochs x steps_per_generation), so ppokit would do {optimizer_steps_per_batch}x TRL's steps; "
        f"write n_epochs instead of num_iterations and max_steps in generation batches (TRL's meaning: "
        f"max_steps={ppokit_steps})"
    )


def translate_trl_config(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a top-level config mapping with TRL's rule-based keys turned into ppokit's.

    - ``per_device_train_batch_size`` (completions per micro-step), ``gradient_accumulation_steps``,
      ``steps_per_generation`` (micro-steps per generation batch, TRL's default: the accumulation
      steps) or ``generation_batch_size`` (completions per generation batch) become
      ``micro_batch_size``, ``prompts_per_step`` (= generation batch / ``num_generations``) and
      ppokit's ``steps_per_generation`` (optimizer steps per generation batch).
    - ``adam_beta1`` / ``adam_beta2`` -> ``adam_betas``; ``use_cpu`` -> ``device: cpu``;
      ``scale_rewards`` True/False -> ``"group"`` / ``"none"``; ``model_init_kwargs.dtype`` ->
      ``torch_dtype``; ``save_strategy: "no"`` -> ``checkpoint_every: 0``; ``report_to: "all"`` ->
      tensorboard (and wandb when it is installed: left to the user to name); ``warmup_ratio`` ->
      ``warmup_steps`` below 1 (a fraction, as TRL).
    - Refused: a key of ``TRL_UNSUPPORTED`` (saying what to use instead), ``max_steps`` next to TRL keys
      that make a generation batch several optimizer steps (``check_trl_step_count``), a no-op key with
      a value ppokit cannot honour. The other no-op keys are dropped with a one-time notice.
    """
    data = dict(data)
    for key in [k for k in data if k in TRL_UNSUPPORTED]:
        raise ConfigError(f"{key} (a TRL / transformers key) is not supported: {TRL_UNSUPPORTED[key]}")
    spg = 1  # ppokit's optimizer steps per generation batch the TRL batch keys ask for
    step_keys = (
        "num_iterations",
        "per_device_train_batch_size",
        "generation_batch_size",
        "steps_per_generation",
    )
    # prompts_per_step is ppokit's own batch key, which no TRL config has: next to it num_iterations is
    # ppokit 0.1's spelling of n_epochs (its saved configs hold both), with ppokit's max_steps
    trl_step_keys = [] if "prompts_per_step" in data else [k for k in step_keys if k in data]
    if "per_device_train_batch_size" in data or "generation_batch_size" in data:
        micro = data.pop("per_device_train_batch_size", None)
        accumulate = int(data.pop("gradient_accumulation_steps", 1))
        micro_steps = data.pop("steps_per_generation", None)
        generation_batch = data.pop("generation_batch_size", None)
        if micro is None:
            micro = generation_batch // (micro_steps or accumulate)
        if generation_batch is None:
            generation_batch = micro * (micro_steps or accumulate)
        micro_steps = generation_batch // micro
        g = int(data.get("num_generations", 8))
        if generation_batch % g or micro_steps % accumulate:
            raise ConfigError(
                f"generation batch {generation_batch} (per_device_train_batch_size x steps_per_generation) "
                f"must be a multiple of num_generations={g}, and steps_per_generation={micro_steps} of "
                f"gradient_accumulation_steps={accumulate}"
            )
        data.setdefault("prompts_per_step", generation_batch // g)
        data.setdefault("micro_batch_size", micro if micro < generation_batch else 0)
        data["steps_per_generation"] = spg = micro_steps // accumulate
    elif "gradient_accumulation_steps" in data:
        raise ConfigError("gradient_accumulation_steps needs per_device_train_batch_size (TRL's batch keys)")
    iterations = data.get("num_iterations", 1)
    check_trl_step_count(data, spg * (iterations if isinstance(iterations, int) else 1), trl_step_keys)
    if "warmup_ratio" in data:  # transformers' older spelling of warmup_steps < 1
        ratio = data.pop("warmup_ratio")
        if data.get("warmup_steps"):
            raise ConfigError("warmup_ratio and warmup_steps name the same setting; give one of them")
        if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
            raise ConfigError(f"warmup_ratio={short(ratio)} is not allowed; must lie in [0, 1)")
        data["warmup_steps"] = float(ratio)
    if "adam_beta1" in data or "adam_beta2" in data:
        betas = list(data.get("adam_betas", [0.9, 0.999]))
        betas[0] = data.pop("adam_beta1", betas[0])
        betas[1] = data.pop("adam_beta2", betas[1])
        data["adam_betas"] = betas
    if data.pop("use_cpu", False):
        data["device"] = "cpu"
    if "fsdp" in data:
        data.update(_fsdp_options(data.pop("fsdp"), dict(data.get("distributed") or {})))
    if isinstance(data.get("scale_rewards"), bool):
        data["scale_rewards"] = "group" if data["scale_rewards"] else "none"
    init_kwargs = data.pop("model_init_kwargs", None) or {}
    if isinstance(init_kwargs, str):
        init_kwargs = json.loads(init_kwargs)
    for key, value in init_kwargs.items():
        if key not in ("dtype", "torch_dtype"):
            raise ConfigError(f"model_init_kwargs[{key!r}] is not supported; ppokit reads dtype only")
        data["torch_dtype"] = str(value).replace("torch.", "")
    if data.get("save_strategy") == "no":
        data["checkpoint_every"] = 0
    if data.get("eval_strategy") == "no":
        data["eval_every"] = 0
    if isinstance(data.get("report_to"), str):
        data["report_to"] = [data["report_to"]]
    if data.get("report_to") in (["all"], ["none"]):
        data["report_to"] = ["tensorboard"] if data["report_to"] == ["all"] else []
    for key in [k for k in data if k in TRL_NOOP]:
        value = data.pop(key)
        if not TRL_NOOP[key](value):
            why = NOOP_HELP.get(key, "ppokit has no such option")
            raise ConfigError(f"{key}={value!r} is not supported; {why}")
        if key in NOOP_NOTICE:
            notice_once(f"ppokit: TRL's {key}={short(value)} changes nothing here: {NOOP_NOTICE[key]}")
    return data


def _fsdp_options(value: Any, section: dict[str, Any]) -> dict[str, Any]:
    """transformers' ``fsdp`` option (``"full_shard auto_wrap"``, ``"shard_grad_op"``, ``"full_shard
    offload"``, a list of those, or empty) as ppokit's ``distributed`` section: full_shard ->
    strategy fsdp; shard_grad_op (ZeRO-2: weights stay gathered from forward to backward) -> also
    reshard_after_forward false; offload -> cpu_offload. ppokit always wraps per transformer block."""
    words = value.split() if isinstance(value, str) else list(value or [])
    known = {"full_shard", "shard_grad_op", "hybrid_shard", "offload", "auto_wrap", "no_shard"}
    if set(words) - known or "hybrid_shard" in words:
        raise ConfigError(
            f"fsdp={short(value)} is not supported; ppokit takes full_shard, shard_grad_op, offload and "
            "auto_wrap (or distributed.strategy=fsdp)"
        )
    if not words or words == ["no_shard"]:
        return {}
    section["strategy"] = "fsdp"
    if "shard_grad_op" in words:
        section["reshard_after_forward"] = False
    if "offload" in words:
        section["cpu_offload"] = True
    return {"distributed": section}


def uses_trl_spelling(data: dict[str, Any]) -> bool:
    """Whether a config mapping was written for TRL: a TRL rule key, a TRL no-op key or a TRL alias."""
    trl_alias = lambda k: k in ALIASES and "TRL" in ALIASES[k][1]
    return any(k in TRL_RULE_KEYS or k in TRL_NOOP or trl_alias(k) for k in data)


def notice_trl_defaults(given: dict[str, Any], ours: Any) -> None:
    """Once per process, name the defaults of ``ours`` (a config) that differ from TRL's and that
    ``given`` (what the user wrote, TRL-spelled) left unset: ``ours.trl_defaults()`` maps a ppokit key
    to ``(TRL's value, how TRL says it)``. Issue 34: ``GRPOConfig()`` differs from TRL's (16x the batch,
    beta 0.04 vs 0, constant vs linear learning rate) without saying so."""
    written = {ALIASES[k][0] if k in ALIASES else k for k in given}
    if "per_device_train_batch_size" in given or "generation_batch_size" in given:
        written.add("prompts_per_step")
    if "warmup_ratio" in given:
        written.add("warmup_steps")
    differ = [
        f"{key}={short(getattr(ours, key))} (TRL: {trl_says})"
        for key, (trl, trl_says) in ours.trl_defaults().items()
        if key not in written and getattr(ours, key) != trl
    ]
    if differ:
        notice_once(
            f"ppokit {type(ours).__name__}: these defaults differ from TRL's and were not set: "
            + ", ".join(differ)
            + "; set them to keep TRL's behaviour (docs/grpo.md, 'Porting a TRL script')"
        )


@dataclass
class TrainerState:
    """The subset of transformers' ``TrainerState`` that reward functions and callbacks read
    (``trainer_state`` in TRL's reward signature)."""

    global_step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    num_input_tokens_seen: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list)
    is_world_process_zero: bool = True


class Control:
    """transformers' ``TrainerControl`` as far as ppokit reads it: ``should_training_stop``."""

    def __init__(self) -> None:
        self.should_training_stop = False
        self.should_log = self.should_save = self.should_evaluate = False


class Callbacks:
    """Runs ``callbacks``: a function ``callback(trainer, metrics) -> bool | None`` after each step
    (returning False stops training, as in classic ``PPO.learn(callback=...)``), or an object with
    TRL/transformers ``TrainerCallback`` methods (``on_train_begin``, ``on_step_begin``,
    ``on_step_end``, ``on_log``, ``on_evaluate``, ``on_save``, ``on_train_end``; setting
    ``control.should_training_stop`` stops training)."""

    def __init__(self, callbacks: Iterable[Any], trainer: LMTrainer):
        self.items = list(callbacks)
        self.trainer = trainer
        self.control = Control()

    def _event(self, name: str, **kwargs: Any) -> None:
        t = self.trainer
        for cb in self.items:
            method = getattr(cb, name, None)
            if method is not None and not isinstance(cb, type(lambda: 0)):
                method(t.config, t.state, self.control, model=t.model, processing_class=t.tokenizer, **kwargs)

    def begin(self) -> None:
        """Before the first step."""
        self._event("on_train_begin")

    def step_begin(self) -> None:
        """Before each step."""
        self._event("on_step_begin")

    def step_end(self, metrics: dict[str, Any]) -> bool:
        """After each step; returns whether training should stop. The row goes to
        ``trainer.state.log_history`` (TRL's list of logged dicts, with ``step`` and ``epoch``), and a
        row holding the held-out evaluation (``eval/*``) fires ``on_evaluate`` with those metrics
        (issue 34: neither happened)."""
        state = self.trainer.state
        state.log_history.append({**metrics, "step": state.global_step, "epoch": state.epoch})
        self._event("on_step_end")
        evaluation = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if evaluation:
            self._event("on_evaluate", metrics=evaluation)
        self._event("on_log", logs=metrics)
        stop = self.control.should_training_stop
        for cb in self.items:
            if callable(cb) and not hasattr(cb, "on_step_end") and cb(self.trainer, metrics) is False:
                stop = True
        return stop

    def saved(self) -> None:
        """After a checkpoint was written (TRL's ``on_save``)."""
        self._event("on_save")

    def end(self) -> None:
        """After the last step."""
        self._event("on_train_end")


def trl_positional(positional: tuple, args: Any, train_dataset: Any, eval_dataset: Any) -> tuple:
    """TRL's positional order, ``GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset)``,
    read from the four positions ppokit's trainers call ``(tokenizer, reward_funcs, train_prompts,
    config)``: ``(reward_funcs, args, train_dataset, eval_dataset)``, each keyword kept where its
    position is empty."""
    reward_funcs, *rest = positional
    given = (args, train_dataset, eval_dataset)
    return (reward_funcs, *(pos if pos is not None else kw for pos, kw in zip(rest, given)))


def trl_completion(prompt: str | list[dict[str, str]], text: str) -> str | list[dict[str, str]]:
    """A completion as TRL hands it to reward functions: for a conversational prompt (a list of
    messages) ``[{"role": "assistant", "content": text}]``, otherwise the text."""
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": text}]
    return text
