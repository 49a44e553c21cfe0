"""RLHFPPOTrainer: where gradients go, that a step trains, rewards in a real rollout, resume, reward model."""

from __future__ import annotations

import pytest
import torch

from ppokit.errors import CheckpointError
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, save_pretrained
from ppokit.llm.reward_model import RewardModel
from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

PROMPTS = ["1+1=", "2+3=", "11+5=", "9+9=", "40+2=", "7+70=", "3+4=", "8+1="]


def tiny(seed: int = 0):
    tok = build_char_tokenizer()
    return build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed), tok


def config(**kw) -> RLHFPPOConfig:
    base = dict(
        learning_rate=1e-3, max_steps=2, prompts_per_step=8, num_mini_batches=2, seed=0, tensorboard=False
    )
    cfg = RLHFPPOConfig.from_dict({**base, **kw})
    cfg.generation.max_completion_length = 6
    return cfg


def digit_fraction(prompts, completions, **_):
    """Dense: the fraction of completion characters that are digits."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def trainer_for(value_model: str = "shared", **kw) -> RLHFPPOTrainer:
    model, tok = tiny()
    return RLHFPPOTrainer(
        model, tok, digit_fraction, PROMPTS, config(value_model=value_model, **kw), progress=False
    )


def grads(params) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


def test_shared_value_loss_reaches_head_and_trunk_policy_loss_never_reaches_the_head():
    t = trainer_for("shared")
    b = t.rollout()
    logp, values, _ = t._forward(b, slice(None))
    (values * b.mask).sum().backward(retain_graph=True)
    assert all(grads(t.value_head.parameters()))
    assert all(grads(t.model.transformer.h.parameters()))  # the shared trunk learns from the critic
    assert not any(grads(t.ref_model.parameters()))
    t.model.zero_grad(set_to_none=True)
    t.value_head.zero_grad(set_to_none=True)
    (logp * b.mask).sum().backward()
    assert not any(grads(t.value_head.parameters()))
    assert all(grads(t.model.transformer.h.parameters()))
    assert not any(grads(t.ref_model.parameters()))


def test_separate_critic_shares_nothing_with_the_policy():
    t = trainer_for("separate")
    policy_ids = {id(p) for p in t.model.parameters()}
    assert not policy_ids & {id(p) for p in t.critic.parameters()}
    b = t.rollout()
    logp, values, _ = t._forward(b, slice(None))
    (values * b.mask).sum().backward(retain_graph=True)
    assert not any(grads(t.model.parameters()))
    assert all(grads(t.value_head.parameters())) and any(grads(t.critic.parameters()))
    t.critic.zero_grad(set_to_none=True)
    t.value_head.zero_grad(set_to_none=True)
    (logp * b.mask).sum().backward()
    assert not any(grads(t.critic.parameters())) and not any(grads(t.value_head.parameters()))
    assert any(grads(t.model.parameters()))


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_a_training_step_changes_policy_and_critic_but_not_the_reference(value_model):
    t = trainer_for(value_model)
    snap = lambda m: [p.detach().clone() for p in m.parameters()]
    policy, head, ref = snap(t.model), snap(t.value_head), snap(t.ref_model)
    critic = snap(t.critic) if t.critic is not None else []
    metrics = t.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(policy, t.model.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(head, t.value_head.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref, t.ref_model.parameters()))
    if critic:
        assert any(not torch.equal(a, b) for a, b in zip(critic, t.critic.parameters()))
    for key in ("objective/kl", "objective/scores", "objective/rlhf_reward", "policy/approxkl_avg",
                "train/clipped_fraction", "train/clip_fraction", "loss/policy_avg", "loss/value_avg",
                "train/value_clipped_fraction"):  # fmt: skip
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN


def test_first_minibatch_of_one_epoch_sees_ratio_one():
    t = trainer_for(n_epochs=1, num_mini_batches=1)
    m = t.train_step()
    assert m["train/clipped_fraction"] == 0.0 and m["train/value_clipped_fraction"] == 0.0
    assert m["train/clip_fraction"] == 0.0
    assert m["policy/approxkl_avg"] < 1e-8 and abs(m["val/ratio"] - 1.0) < 1e-5


def test_dropout_is_off_so_the_first_ratio_is_one_even_for_a_model_with_dropout():
    model, tok = tiny()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    cfg = config(n_epochs=1, num_mini_batches=1)
    t = RLHFPPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, progress=False)
    m = t.train_step()
    assert m["policy/approxkl_avg"] < 1e-8 and m["train/clipped_fraction"] == 0.0


def test_rollout_rewards_are_kl_terms_plus_the_score_at_the_last_token():
    t = trainer_for(kl_coef=0.3, missing_eos_penalty=2.0)
    b = t.rollout()
    assert b.kl.abs().sum() == 0  # the policy is its own reference on step one
    with torch.no_grad():  # perturb the policy so the KL terms are non-zero
        for p in t.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = t.rollout()
    assert b.kl[b.mask].abs().sum() > 0 and (b.kl[~b.mask] == 0).all()
    raw = torch.tensor(digit_fraction(None, b.texts))
    assert torch.allclose(b.scores, raw - 2.0 * (~b.ended).float())  # the missing-EOS penalty
    last = b.mask.sum(1) - 1
    expected = -0.3 * b.kl
    expected[torch.arange(len(last)), last] += b.scores
    assert torch.allclose(b.rewards, expected * b.mask, atol=1e-6)
    assert (b.advantages[~b.mask] == 0).all() and abs(float(b.advantages[b.mask].mean())) < 1e-5


def test_adaptive_kl_coefficient_changes_during_training():
    t = trainer_for(kl_adaptive=True, adaptive_kl_target=1e-3, kl_horizon=8)
    with torch.no_grad():
        for p in t.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m = t.train_step()
    assert m["objective/kl"] > 1e-3
    assert t.kl_coef == pytest.approx(0.05 * 1.2)  # error clipped at +0.2, n / horizon = 1


def test_zero_kl_coef_builds_no_reference():
    t = trainer_for(kl_coef=0.0)
    assert t.ref_model is None
    assert t.train_step()["objective/kl"] == 0.0


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_resume_restores_value_head_critic_reference_and_kl_coef(tmp_path, value_model):
    model, tok = tiny()
    cfg = config(value_model=value_model, kl_adaptive=True)
    t = RLHFPPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, run_dir=tmp_path, progress=False)
    t.train_step()
    t.kl_coef = 0.123
    t.save_checkpoint()
    r = RLHFPPOTrainer.resume(tmp_path, digit_fraction, PROMPTS, run_dir=tmp_path, progress=False)
    assert r.step == 1 and r.kl_coef == pytest.approx(0.123)
    same = lambda a, b: all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )
    assert same(r.value_head, t.value_head) and same(r.ref_model, t.ref_model) and same(r.model, t.model)
    assert not same(r.ref_model, r.model)  # the anchor is the initial policy, not the resumed one
    if value_model == "separate":
        assert same(r.critic, t.critic)
    r.train_step()
    assert r.step == 2


def tiny_reward_model(path, num_labels: int = 1):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    sizes = dict(n_positions=32, n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok))
    cfg = GPT2Config(**sizes, num_labels=num_labels, pad_token_id=tok.pad_token_id)
    save_pretrained(GPT2ForSequenceClassification(cfg), tok, path)
    return path


def test_reward_model_scores_like_a_reward_function_and_ignores_padding(tmp_path):
    rm = RewardModel(tiny_reward_model(tmp_path / "rm"), batch_size=2)
    scores = rm(["1+1=", "12+30="], ["2", "42"])
    alone = rm(["12+30="], ["42"])
    assert len(scores) == 2 and scores[1] == pytest.approx(alone[0], abs=1e-5)  # padding changes nothing
    assert scores[0] != pytest.approx(scores[1])
    t = trainer_for()
    t.reward_funcs, t.reward_names = [rm], ["reward_model"]
    assert "rewards/reward_model/mean" in t.train_step()


def test_reward_model_with_two_labels_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="num_labels=1"):
        RewardModel(tiny_reward_model(tmp_path / "rm", num_labels=2))


def test_the_guarded_step_checks_the_real_loss_of_its_micro_batches():
    """The optimizer-step contract (train/step.py): each step's closure returns the sum of the losses
    its micro-batches backpropagated (not a sum of diagnostics), and ``loss`` is the override point."""
    t = trainer_for(micro_batch_size=2, n_epochs=1)  # 2 minibatches of 4, each 2 micro-batches
    per_step: list[float] = []
    step = t.guard.step
    t.guard.step = lambda closure: step(lambda: per_step.append(closure()) or per_step[-1])
    micro: list[float] = []
    original = t.loss

    def recording_loss(batch):
        loss, terms = original(batch)
        micro.append(float(loss))
        return loss, terms

    t.loss = recording_loss
    t.train_step()
    assert len(per_step) == 2 and len(micro) == 4
    assert per_step == pytest.approx([micro[0] + micro[1], micro[2] + micro[3]])
