"""LoRA through peft: only adapters train, the reference is the adapter-disabled policy (no copy),
checkpoints hold the adapter and resume bit-exact, merged export, RLHF-PPO with each critic option."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from ppokit.llm.checkpoint import find_checkpoint  # noqa: E402
from ppokit.llm.config import TinyModelConfig  # noqa: E402
from ppokit.llm.generation import completion_logprobs, encode_prompts, generate  # noqa: E402
from ppokit.llm.grpo import GRPOTrainer  # noqa: E402
from ppokit.llm.grpo_config import GRPOConfig  # noqa: E402
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained, save_pretrained  # noqa: E402
from ppokit.llm.rlhf_ppo import RLHFPPOTrainer  # noqa: E402
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig  # noqa: E402

PROMPTS = ["1+1=", "2+3=", "11+5=", "9+9=", "40+2=", "7+70="]


def spread_reward(prompts, completions, **_):
    return [float(sum(ord(ch) % 3 for ch in c)) for c in completions]


def tiny(arch: str = "gpt2", seed: int = 0):
    tok = build_char_tokenizer()
    cfg = TinyModelConfig(architecture=arch, n_layer=1, n_embd=32, n_head=2)
    return build_tiny_model(cfg, tok, seed), tok


def grpo_config(**kw) -> GRPOConfig:
    base = dict(
        max_steps=2, prompts_per_step=2, num_generations=4, seed=0, tensorboard=False, learning_rate=1e-2,
        use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
    )  # fmt: skip
    cfg = GRPOConfig.from_dict({**base, **kw})
    cfg.generation.max_completion_length = 6
    return cfg


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_only_adapters_train_and_the_reference_is_the_base_model(arch):
    model, tok = tiny(arch)
    base = build_tiny_model(TinyModelConfig(architecture=arch, n_layer=1, n_embd=32, n_head=2), tok, 0)
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, grpo_config(), progress=False)
    assert trainer.is_peft and trainer.ref_model is None and trainer.has_reference  # no copy
    params = dict(trainer.model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.train_step()
    trainer.train_step()
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert {n for n, p in params.items() if p.requires_grad} == {n for n in params if "lora_" in n}
    # the adapters moved the policy away from the base; the reference log-probs are the base's
    ro = trainer.last_rollout
    ref = trainer._ref_logprobs(ro)
    with torch.no_grad():
        expected, _ = completion_logprobs(base, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.mask)
        policy = trainer._logprobs(trainer.model, ro)
    assert torch.allclose(ref[ro.mask], expected[ro.mask], atol=1e-5)
    assert not torch.allclose(policy[ro.mask], expected[ro.mask], atol=1e-3)


def test_lora_run_resumes_bit_exact_and_exports_a_merged_model(tmp_path):
    straight, tok = tiny()
    t = GRPOTrainer(straight, tok, spread_reward, PROMPTS, grpo_config(max_steps=4), run_dir=tmp_path / "a",
                    progress=False)  # fmt: skip
    t.train()
    model, tok = tiny()
    first = GRPOTrainer(model, tok, spread_reward, PROMPTS, grpo_config(max_steps=2), run_dir=tmp_path / "b",
                        progress=False)  # fmt: skip
    first.train()
    found = find_checkpoint(tmp_path / "b")
    assert (found / "model" / "adapter_config.json").is_file() and (
        found / "base_model" / "config.json"
    ).is_file()
    resumed = GRPOTrainer.resume(tmp_path / "b", spread_reward, PROMPTS, grpo_config(max_steps=4),
                                 run_dir=tmp_path / "b", progress=False)  # fmt: skip
    assert resumed.is_peft and resumed.step == 2
    resumed.train()
    a = {n: p for n, p in t.model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in resumed.model.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    # merged export: a plain model with the adapters folded in, same outputs
    out = t.save_model(tmp_path / "merged", merged=True)
    merged, _ = load_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, t.model(input_ids=ids).logits, atol=1e-5)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_lora_checkpoint_of_a_model_directory_refers_to_it(tmp_path):
    model, tok = tiny()
    save_pretrained(model, tok, tmp_path / "base")
    model, tok = load_pretrained(tmp_path / "base")
    t = GRPOTrainer(model, tok, spread_reward, PROMPTS, grpo_config(max_steps=1), run_dir=tmp_path / "run",
                    model_dir=tmp_path / "base", progress=False)  # fmt: skip
    t.train()
    found = find_checkpoint(tmp_path / "run")
    assert not (found / "base_model").exists()  # the frozen base is not copied into every checkpoint
    resumed = GRPOTrainer.resume(tmp_path / "run", spread_reward, PROMPTS, grpo_config(max_steps=2),
                                 progress=False)  # fmt: skip
    assert resumed.model_dir == str((tmp_path / "base").resolve())
    resumed.train_step()


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_rlhf_ppo_with_lora_trains_each_critic_option(value_model):
    model, tok = tiny()
    cfg = RLHFPPOConfig.from_dict(
        dict(max_steps=1, prompts_per_step=4, n_epochs=2, seed=0, tensorboard=False, learning_rate=1e-2,
             use_peft=True, lora_r=4, lora_dropout=0.0, value_model=value_model, kl_coef=0.05)
    )  # fmt: skip
    cfg.generation.max_completion_length = 5
    trainer = RLHFPPOTrainer(model, tok, spread_reward, PROMPTS, cfg, progress=False)
    assert trainer.ref_model is None
    watched = dict(trainer.model.named_parameters())
    if trainer.critic is not None:
        watched.update({f"critic.{n}": p for n, p in trainer.critic.named_parameters()})
    watched.update({f"value_head.{n}": p for n, p in trainer.value_head.named_parameters()})
    before = {n: p.detach().clone() for n, p in watched.items()}
    metrics = trainer.train_step()
    assert metrics["grad_norm"] > 0
    changed = {n for n, p in watched.items() if not torch.equal(p, before[n])}
    assert any(n.startswith("value_head.") for n in changed)
    assert all("lora_" in n or n.startswith("value_head.") for n in changed), changed
    policy_changed = {n for n in changed if not n.startswith(("critic.", "value_head."))}
    assert policy_changed
    if value_model == "separate":
        assert any(n.startswith("critic.") for n in changed)
        # only what trains is in the optimizer: the critic's frozen base gets no gradient buffer
        frozen = [p for p in trainer.critic.parameters() if not p.requires_grad]
        assert frozen and all(p.grad is None for p in frozen)


def test_generation_works_on_a_peft_model():
    model, tok = tiny()
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, grpo_config(kl_coef=0.0), progress=False)
    ids, mask = encode_prompts(tok, ["1+2="], 16)
    out = generate(trainer.model, ids, mask, 4, [tok.eos_token_id], tok.pad_token_id, greedy=True)
    assert out.tokens.shape == (1, 4) or out.ended.all()


def test_cli_lora_bf16_run_on_a_local_bf16_model_directory_and_its_resume(tmp_path, capsys):
    import json

    from ppokit.cli import main

    model, tok = tiny()
    save_pretrained(model.to(torch.bfloat16), tok, tmp_path / "my-model")
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    (tmp_path / "my_reward.py").write_text(
        "def sevens(prompts, completions, **kw):\n"
        "    return [c.count('7') / max(len(c), 1) for c in completions]\n"
    )
    run = tmp_path / "run"
    argv = ["grpo", "--model", str(tmp_path / "my-model"), "--prompts", str(tmp_path / "prompts.jsonl")]
    argv += ["--reward", f"{tmp_path / 'my_reward.py'}:sevens", "--run-dir", str(run), "--max-steps", "2"]
    for kv in ("use_peft=true", "lora_r=4", "bf16=true", "torch_dtype=bfloat16", "prompts_per_step=2",
               "num_generations=4", "generation.max_completion_length=4", "tensorboard=false"):  # fmt: skip
        argv += ["--set", kv]
    assert main([*argv, "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = find_checkpoint(run)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["peft"]["base_model"] == str((tmp_path / "my-model").resolve()) and summary["steps"] == 2
    assert main(["resume", str(run), "--max-steps", "3", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
