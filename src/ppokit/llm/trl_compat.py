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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppokit.errors import ConfigError

if TYPE_CHECKING:  # the trainer imports this module; its type is all this one needs
    from ppokit.llm.trainer import LMTrainer

# TRL keys that describe what ppokit does anyway (value -> accepted?); anything else is refused.
TRL_NOOP: dict[str, Callable[[Any], bool]] = {
    "remove_unused_columns": lambda v: True,  # ppokit always passes every column to the rewards
    "log_completions": lambda v: True,  # ppokit always writes completions.jsonl and samples.md
    "shuffle_dataset": lambda v: v in (True, None),  # ppokit shuffles with the seed
    "disable_dropout": lambda v: True,  # the built-in models have none; a user model keeps its own
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
      tensorboard (and wandb when it is installed: left to the user to name).
    """
    data = dict(data)
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
        data["steps_per_generation"] = micro_steps // accumulate
    elif "gradient_accumulation_steps" in data:
        raise ConfigError("gradient_accumulation_steps needs per_device_train_batch_size (TRL's batch keys)")
    if "adam_beta1" in data or "adam_beta2" in data:
        betas = list(data.get("adam_betas", [0.9, 0.999]))
        betas[0] = data.pop("adam_beta1", betas[0])
        betas[1] = data.pop("adam_beta2", betas[1])
        data["adam_betas"] = betas
    if data.pop("use_cpu", False):
        data["device"] = "cpu"
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
    return data


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
        """After each step; returns whether training should stop."""
        self._event("on_step_end")
        self._event("on_log", logs=metrics)
        stop = self.control.should_training_stop
        for cb in self.items:
            if callable(cb) and not hasattr(cb, "on_step_end") and cb(self.trainer, metrics) is False:
                stop = True
        return stop

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
