"""A TRL GRPO script runs with its imports changed only: TRL's constructor and config names, a
conversational dataset (message-list completions), rewards that take ``completion_ids`` and
``trainer_state``, a peft_config, a TrainerCallback; plus datasets from files, reward-model
directories, and one-line errors for the user mistakes of this path."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("peft")

from ppokit.errors import ConfigError  # noqa: E402
from ppokit.llm.config import TinyModelConfig  # noqa: E402
from ppokit.llm.grpo_config import GRPOConfig as PpokitGRPOConfig  # noqa: E402
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, save_pretrained  # noqa: E402

CHAT = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"

# A TRL script as its users write it (TRL's docs' quick start, a conversational dataset, LoRA, a
# callback); the test replaces nothing but the first import line.
TRL_SCRIPT = """
from trl import GRPOConfig, GRPOTrainer
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

dataset = Dataset.from_list(
    [{"prompt": [{"role": "user", "content": f"{a}+{b}"}], "answer": str(a + b)}
     for a in range(5) for b in range(5)]
)

def reward_len(completions, **kwargs):
    return [-abs(3 - len(c[0]["content"])) for c in completions]

def reward_answer(completions, answer, completion_ids, trainer_state, **kwargs):
    seen.append((trainer_state.global_step, [len(ids) for ids in completion_ids]))
    return [float(c[0]["content"].strip() == a) for c, a in zip(completions, answer)]

class StepCounter(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        steps.append(state.global_step)

training_args = GRPOConfig(
    output_dir=OUTPUT_DIR,
    learning_rate=1e-4,
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=4,
    max_prompt_length=16,
    logging_steps=1,
    max_steps=2,
    beta=0.04,
    loss_type="dapo",
    bf16=True,
    report_to="none",
    save_steps=1,
    seed=0,
)
trainer = GRPOTrainer(
    model=MODEL_DIR,
    reward_funcs=[reward_len, reward_answer],
    args=training_args,
    train_dataset=dataset,
    peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM"),
    callbacks=[StepCounter()],
)
trainer.train()
trainer.save_model(OUTPUT_DIR + "/final")
"""


def _one_step_config():
    """One GRPO step on 2 prompts x 2 completions of at most 4 tokens, no KL (the tests' smallest run)."""
    from ppokit.llm.grpo_config import GRPOConfig

    return GRPOConfig(
        max_steps=1,
        prompts_per_step=2,
        num_generations=2,
        kl_coef=0.0,
        tensorboard=False,
        max_completion_length=4,
    )


@pytest.fixture
def model_dir(tmp_path):
    tok = build_char_tokenizer()
    tok.chat_template = CHAT
    save_pretrained(
        build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, 0), tok, tmp_path / "m"
    )
    return tmp_path / "m"


def test_a_trl_script_runs_with_its_imports_changed(model_dir, tmp_path):
    script = TRL_SCRIPT.replace("from trl import", "from ppokit.llm import")
    seen, steps = [], []
    namespace = {
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MODEL_DIR": str(model_dir),
        "seen": seen,
        "steps": steps,
    }
    exec(compile(script, "trl_script.py", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.step == 2 and steps == [1, 2] and [s for s, _ in seen] == [0, 1]
    assert all(1 <= n <= 4 for _, lengths in seen for n in lengths)  # ids up to and including EOS
    cfg = trainer.config  # TRL's names landed on ppokit's keys
    assert (cfg.prompts_per_step, cfg.micro_batch_size, cfg.kl_coef, cfg.log_every) == (2, 0, 0.04, 1)
    assert cfg.bf16 and cfg.loss_type == "dapo" and cfg.generation.max_completion_length == 4
    assert trainer.is_peft and trainer.ref_model is None
    out = tmp_path / "out"
    assert (out / "metrics.csv").is_file() and (out / "checkpoints").is_dir()
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {1, 2} and all(isinstance(r["completion"], str) for r in rows)
    assert (out / "final" / "adapter_config.json").is_file()  # TRL's save_model of a LoRA model


def test_ppokit_positional_signature_still_works_and_rewards_get_only_their_keywords(model_dir):
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import load_pretrained

    model, tok = load_pretrained(model_dir)
    calls = []

    def plain(prompts, completions):  # no **kwargs: gets no trainer_state, completion_ids, ...
        calls.append(len(completions))
        return [0.0] * len(completions)

    cfg = GRPOConfig(
        max_steps=1,
        prompts_per_step=2,
        num_generations=2,
        tensorboard=False,
        kl_coef=0.0,
        max_completion_length=4,
    )
    trainer = GRPOTrainer(model, tok, plain, ["1+1=", "2+2="], cfg, progress=False)
    trainer.train_step()
    assert calls == [4]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_datasets_from_files(model_dir, tmp_path, suffix):
    from ppokit.llm.grpo import GRPOTrainer

    rows = [{"prompt": p, "answer": "2"} for p in ("1+1=", "0+2=")]
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), str(path))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))

    def answer_reward(completions, answer, **_):
        return [float(c == a) for c, a in zip(completions, answer)]

    cfg = _one_step_config()
    trainer = GRPOTrainer(str(model_dir), answer_reward, cfg, str(path), progress=False)  # TRL's positions
    assert trainer.rows == rows
    trainer.train_step()


def test_a_reward_model_directory_scores_conversational_completions(model_dir, tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    rm = GPT2ForSequenceClassification(
        GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2, vocab_size=len(tok), num_labels=1)
    )
    save_pretrained(rm, tok, tmp_path / "rm")
    cfg = _one_step_config()
    prompts = [
        {"prompt": [{"role": "user", "content": "1+1"}]},
        {"prompt": [{"role": "user", "content": "2+3"}]},
    ]
    trainer = GRPOTrainer(
        model=str(model_dir), reward_funcs=str(tmp_path / "rm"), args=cfg, train_dataset=prompts
    )
    metrics = trainer.train_step()
    assert torch.isfinite(torch.tensor(metrics["rewards/reward_model/mean"]))


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (lambda prompts, completions, **_: 1.0, "returned float"),
        (lambda prompts, completions, **_: ["x"] * len(completions), "returned 'x'"),
        (lambda prompts, completions, **_: [1.0], "returned 1 values"),
        (lambda prompt, completion: [1.0], "raised TypeError"),
    ],
)
def test_bad_reward_functions_are_one_line_errors(model_dir, reward, message):
    from ppokit.errors import PPOKitError
    from ppokit.llm.grpo import GRPOTrainer

    cfg = _one_step_config()
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=cfg, train_dataset=["1+1=", "2+2="])
    with pytest.raises(PPOKitError, match=message) as err:  # ConfigError or RewardFunctionError
        trainer.train_step()
    assert len(str(err.value).splitlines()) == 1


def test_user_errors_of_this_path_are_config_errors(model_dir, tmp_path):
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig

    cfg = _one_step_config()
    conv = [{"prompt": [{"role": "user", "content": "1+1"}]}]
    tok = build_char_tokenizer()  # no chat template
    save_pretrained(
        build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, 0), tok, tmp_path / "nc"
    )
    with pytest.raises(ConfigError, match="no chat template"):
        GRPOTrainer(model=str(tmp_path / "nc"), reward_funcs=len, args=cfg, train_dataset=conv)
    (tmp_path / "notok").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "notok" / name).write_bytes((model_dir / name).read_bytes())
    from ppokit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="has no tokenizer"):
        GRPOTrainer(model=str(tmp_path / "notok"), reward_funcs=len, args=cfg, train_dataset=["a"])
    with pytest.raises(ConfigError, match="use_vllm"):
        GRPOConfig(use_vllm=True)
    with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
        GRPOConfig(no_such_key=1)


def test_function_callbacks_stop_training_and_report_to_writes_tensorboard_and_wandb_offline(
    model_dir, tmp_path, monkeypatch
):
    pytest.importorskip("wandb")
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    seen = []

    def stop_after_two(trainer, metrics):  # classic PPO.learn(callback=...) style
        seen.append((trainer.step, "reward" in metrics))
        return trainer.step < 2

    cfg = GRPOConfig(
        max_steps=5, prompts_per_step=2, num_generations=2, kl_coef=0.0, max_completion_length=4,
        report_to=["tensorboard", "wandb"],
    )  # fmt: skip
    run = tmp_path / "run"
    trainer = GRPOTrainer(
        str(model_dir), len_reward, cfg, ["1+1=", "2+2="], run_dir=run, callbacks=[stop_after_two]
    )
    trainer.train()
    assert seen == [(1, True), (2, True)] and trainer.step == 2
    assert any((run / "tb").iterdir())
    assert list((run / "wandb").glob("offline-run-*")), list(run.iterdir())


def len_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def test_cli_model_without_prompts_and_conversations_without_template_are_one_line_exit_2(
    model_dir, tmp_path, capsys
):
    from ppokit.cli import main

    tok = build_char_tokenizer()  # no chat template
    save_pretrained(
        build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, 0), tok, tmp_path / "nc"
    )
    (tmp_path / "chat.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": "1+1"}]}) + "\n")
    (tmp_path / "r.py").write_text("def r(completions, **kw):\n    return [1.0] * len(completions)\n")
    cases = [
        (["--model", str(model_dir)], "without --prompts"),
        (["--model", str(tmp_path / "nc"), "--prompts", str(tmp_path / "chat.jsonl"), "--reward",
          f"{tmp_path / 'r.py'}:r"], "no chat template"),
    ]  # fmt: skip
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["grpo", "--run-dir", str(tmp_path / "run"), "--no-progress", *argv])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1, err


# -- TRL keys that meant something else (issue 34; the table is in docs/reliability.md) --------------
@pytest.fixture
def fresh_notices(monkeypatch):
    """Each test sees the once-per-process notices afresh."""
    from ppokit.llm import trl_compat

    monkeypatch.setattr(trl_compat, "_NOTIFIED", set())


def test_warmup_steps_below_one_is_a_fraction_of_max_steps_as_in_trl():
    from types import SimpleNamespace

    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.trainer import LMTrainer

    cfg = GRPOConfig(warmup_steps=0.1, max_steps=20, learning_rate=1e-3)  # 10% of 20 = 2 warm-up steps
    assert cfg.num_warmup_steps == 2
    lrs = [LMTrainer._lr(SimpleNamespace(config=cfg, step=s)) for s in range(4)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])  # it ran step 1 at 10x the rate (1e-2)
    assert GRPOConfig.from_dict({"warmup_steps": 0.25, "max_steps": 10}).num_warmup_steps == 3  # ceil
    assert GRPOConfig.from_dict({"warmup_ratio": 0.1}).warmup_steps == 0.1  # transformers' old name
    assert GRPOConfig.from_dict({"warmup_steps": 5}).num_warmup_steps == 5
    with pytest.raises(ConfigError, match="warmup_steps=1.5 is not allowed; give a whole number"):
        GRPOConfig.from_dict({"warmup_steps": 1.5})


def test_trl_values_are_translated_key_by_key():
    # scale_rewards=True and report_to="wandb" were translated only when another TRL key was present
    from ppokit.llm.grpo_config import GRPOConfig

    assert GRPOConfig(scale_rewards=True).scale_rewards == "group"
    assert GRPOConfig(scale_rewards=False).scale_rewards == "none"
    assert GRPOConfig(report_to="wandb").report_to == ["wandb"]
    assert GRPOConfig(report_to="none").report_to == []
    assert GRPOConfig(scale_rewards="batch", max_steps=3).max_steps == 3  # canonical values unchanged


def test_max_steps_with_trl_step_keys_is_refused_with_the_ppokit_spelling():
    from ppokit.llm.grpo_config import GRPOConfig

    message = r"max_steps=2 with TRL's num_iterations .* ppokit would do 2x TRL's steps.*max_steps=1\)"
    with pytest.raises(ConfigError, match=message):
        GRPOConfig(num_iterations=2, max_steps=2)
    with pytest.raises(ConfigError, match="each trained 4 optimizer steps"):
        GRPOConfig(per_device_train_batch_size=2, steps_per_generation=4, num_generations=2, max_steps=8)
    # what is unambiguous stays accepted: TRL keys without max_steps, ppokit's own spelling with it
    assert GRPOConfig(num_iterations=2).n_epochs == 2
    assert GRPOConfig(n_epochs=2, max_steps=2, steps_per_generation=2, prompts_per_step=4).max_steps == 2
    assert GRPOConfig(per_device_train_batch_size=8, num_generations=4, max_steps=2).max_steps == 2


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("num_train_epochs", "set max_steps = epochs * rows / prompts_per_step"),
        ("resume_from_checkpoint", "resume with `ppokit resume RUN_DIR`"),
        ("adam_epsilon", "adv_eps is the advantage epsilon, not Adam's"),
    ],
)
def test_unsupported_trl_keys_say_what_to_use_instead_of_a_misleading_guess(key, message):
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

    for build in (lambda: GRPOConfig(**{key: 3}), lambda: RLHFPPOConfig.from_dict({key: 3})):
        with pytest.raises(ConfigError) as info:
            build()
        msg = str(info.value)
        assert msg.startswith(f"{key} (a TRL / transformers key) is not supported") and message in msg
        assert "did you mean" not in msg


def test_differing_trl_defaults_and_noop_keys_are_named_once(fresh_notices):
    import warnings

    from ppokit.llm.grpo_config import GRPOConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GRPOConfig(logging_steps=1, logging_dir="logs")
        GRPOConfig(logging_steps=1, logging_dir="logs")  # the same notices are not repeated
    messages = [str(w.message) for w in caught]
    defaults = [m for m in messages if "defaults differ from TRL's" in m]
    assert len(defaults) == 1 and len(messages) == 2, messages
    for part in ("kl_coef=0.04 (TRL: beta=0.0)", "lr_schedule='constant'", "prompts_per_step=16"):
        assert part in defaults[0]
    assert any("TRL's logging_dir='logs' changes nothing here" in m for m in messages)
    with warnings.catch_warnings(record=True) as caught:  # TRL's values given: nothing to say
        warnings.simplefilter("always")
        GRPOConfig(beta=0.0, lr_scheduler_type="linear", per_device_train_batch_size=8, logging_steps=2)
    assert not [w for w in caught if "defaults differ" in str(w.message)]


def test_a_ppokit_0_1_config_keeps_num_iterations_with_its_own_max_steps():
    # ppokit 0.1 saved `num_iterations` (its name for n_epochs) next to prompts_per_step and max_steps,
    # all in ppokit's units; TRL configs have no prompts_per_step
    from ppokit.llm.grpo_config import GRPOConfig

    cfg = GRPOConfig.from_dict({"num_iterations": 2, "max_steps": 200, "prompts_per_step": 16})
    assert (cfg.n_epochs, cfg.max_steps) == (2, 200)


@pytest.mark.parametrize(
    ("fsdp", "expected"),
    [
        ("full_shard auto_wrap", {"strategy": "fsdp", "cpu_offload": False, "reshard_after_forward": True}),
        (
            ["shard_grad_op", "offload"],
            {"strategy": "fsdp", "cpu_offload": True, "reshard_after_forward": False},
        ),
        ("", {"strategy": "ddp", "cpu_offload": False, "reshard_after_forward": True}),
    ],
)
def test_transformers_fsdp_option_becomes_the_distributed_section(fsdp, expected):
    cfg = PpokitGRPOConfig.from_dict({"fsdp": fsdp})
    assert cfg.distributed.to_dict() == expected


def test_transformers_fsdp_options_ppokit_cannot_honour_are_refused():
    with pytest.raises(ConfigError, match="fsdp='hybrid_shard' is not supported"):
        PpokitGRPOConfig.from_dict({"fsdp": "hybrid_shard"})
    with pytest.raises(ConfigError, match="fsdp_config .* distributed.cpu_offload"):
        PpokitGRPOConfig.from_dict({"fsdp": "full_shard", "fsdp_config": {"min_num_params": 1}})
