"""Language models at real scale, part 1: mixed precision (bf16 autocast with float32 master weights,
fp16 with loss scaling), the refusal to train half-precision weights silently, chunked log-probs,
gradient checkpointing, and no deprecated transformers arguments."""

from __future__ import annotations

import warnings

import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.generation import completion_logprobs, encode_prompts, generate
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained, save_pretrained

PROMPTS = ["1+1=", "2+3=", "11+5=", "9+9="]


def spread_reward(prompts, completions, **_):
    return [float(sum(ord(ch) % 3 for ch in c)) for c in completions]


def tiny(arch: str = "gpt2", seed: int = 0):
    tok = build_char_tokenizer()
    return build_tiny_model(
        TinyModelConfig(architecture=arch, n_layer=1, n_embd=32, n_head=2), tok, seed
    ), tok


def config(**kw) -> GRPOConfig:
    base = dict(max_steps=1, prompts_per_step=4, num_generations=4, seed=1, tensorboard=False, kl_coef=0.0)
    cfg = GRPOConfig.from_dict({**base, **kw})
    cfg.generation.max_completion_length = 6
    return cfg


def test_bf16_checkpoint_trains_with_float32_masters_and_every_weight_moves(tmp_path):
    model, tok = tiny()
    save_pretrained(model.to(torch.bfloat16), tok, tmp_path / "bf16")  # how hub models ship
    # loaded as saved (bfloat16), trained with bf16 autocast: the trainable weights become float32
    model, tok = load_pretrained(tmp_path / "bf16", dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    trainer = GRPOTrainer(
        model, tok, spread_reward, PROMPTS, config(bf16=True, learning_rate=1e-6), progress=False
    )
    params = dict(trainer.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    before = {n: p.detach().clone() for n, p in params.items()}
    metrics = trainer.train_step()
    assert metrics["frac_reward_zero_std"] < 1.0
    unchanged = [n for n, p in params.items() if torch.equal(p, before[n])]
    assert unchanged == []  # at lr 1e-6: pure bfloat16 would leave most weights where they were
    state = trainer.optimizer.state_dict()["state"]
    assert all(s["exp_avg"].dtype == torch.float32 for s in state.values())


def test_bf16_autocast_runs_the_forward_in_bfloat16():
    model, tok = tiny()
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, config(bf16=True), progress=False)
    seen = []
    model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train_step()
    assert seen and set(seen) == {torch.bfloat16}


def test_half_precision_weights_without_bf16_are_refused():
    model, tok = tiny()
    with pytest.raises(ConfigError, match="bf16=true"):
        GRPOTrainer(model.to(torch.bfloat16), tok, spread_reward, PROMPTS, config(), progress=False)
    with pytest.raises(ConfigError, match="exclude"):
        config(bf16=True, fp16=True)


def test_fp16_loss_scaling_skips_an_overflow_and_continues():
    model, tok = tiny()
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, config(fp16=True, max_steps=3), progress=False)
    scaler = trainer.guard.scaler
    scaler.scale = 2.0**40  # float16 gradients overflow at this scale (largest float16: 65504)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step()
    assert trainer.guard.skipped == 1 and scaler.overflows == 1 and scaler.scale == 2.0**39
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # skipped: nothing moved
    scaler.scale = 2.0**8
    metrics = trainer.train_step()
    assert trainer.guard.skipped == 1 and trainer.guard.in_a_row == 0
    assert metrics["grad_norm"] > 0 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.guard.state_dict()["scaler"]["scale"] == 2.0**8


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_chunked_logprobs_equal_the_unchunked_ones_with_gradients(arch):
    model, tok = tiny(arch)
    ids, mask = encode_prompts(tok, ["1+2=", "30+45=", "7+7="], 32)
    g = 2
    out = generate(model, ids, mask, 6, [tok.eos_token_id], tok.pad_token_id, num_return_sequences=g,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    ids, mask = ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)
    results = []
    for chunk, group in ((0, 1), (5, 1), (5, g), (10_000, 1)):
        logp, ent = completion_logprobs(
            model, ids, mask, out.tokens, out.mask, 0.7, True, group_size=group, chunk_size=chunk
        )
        grads = torch.autograd.grad((logp * out.mask).sum(), list(model.parameters()))
        results.append((logp, ent, grads))
    for logp, ent, grads in results[1:]:
        assert torch.allclose(logp, results[0][0], atol=1e-5)
        assert torch.allclose(ent, results[0][1], atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, results[0][2]))


def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_prefix_sharing_for_sampling():
    grads = []
    for checkpointing in (False, True):
        model, tok = tiny()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = GRPOTrainer(
                model,
                tok,
                spread_reward,
                PROMPTS,
                config(gradient_checkpointing=checkpointing),
                progress=False,
            )
        assert (
            any("share_prompt_prefix applies to sampling" in str(w.message) for w in caught) == checkpointing
        )
        assert model.transformer.gradient_checkpointing == checkpointing
        ro = trainer.rollout()
        trainer.guard.zero_grad()
        trainer._epoch_backward(ro, None, None, float(ro.mask.sum()), True, {}, [])
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_a_training_step_uses_no_deprecated_transformers_argument(tmp_path):
    model, tok = tiny("qwen2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, config(kl_coef=0.04), progress=False)
        trainer.train_step()
        trainer.evaluate(trainer.rows[:2])


def test_rlhf_ppo_trains_under_bf16_with_a_float32_value_head():
    from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
    from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

    model, tok = tiny()
    cfg = RLHFPPOConfig.from_dict(
        dict(max_steps=1, prompts_per_step=4, n_epochs=1, seed=0, tensorboard=False, bf16=True, kl_coef=0.05)
    )
    cfg.generation.max_completion_length = 5
    trainer = RLHFPPOTrainer(model, tok, spread_reward, PROMPTS, cfg, progress=False)
    b = trainer.rollout()
    assert b.values_old.dtype == torch.float32
    metrics = trainer.update(b)
    assert metrics["grad_norm"] > 0
