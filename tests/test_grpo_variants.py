"""GRPO's variants in published use: every loss_type, GSPO's sequence-level ratio, the entropy bonus,
two-sided clipping (delta), steps_per_generation, and the sampling keys min_p / repetition_penalty."""

from __future__ import annotations

import pytest
import torch

from ppokit.functional import cispo_surrogate, clipped_surrogate, sapo_surrogate
from ppokit.functional.loss_types import LOSS_TYPES
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.generation import repetition_penalty_, sample_next
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model

PROMPTS = ["1+1=", "2+3=", "11+5=", "9+9="]


def spread_reward(prompts, completions, **_):
    return [float(sum(ord(ch) % 3 for ch in c)) for c in completions]


def constant_reward(prompts, completions, **_):
    return [1.0] * len(completions)


def trainer(reward=spread_reward, **kw) -> GRPOTrainer:
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, 0)
    base = dict(
        learning_rate=1e-3, max_steps=2, prompts_per_step=4, num_generations=4, seed=0, tensorboard=False
    )
    cfg = GRPOConfig.from_dict({**base, **kw})
    cfg.generation.max_completion_length = 6
    return GRPOTrainer(model, tok, reward, PROMPTS, cfg, progress=False)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_and_ratio_level_trains(loss_type, level):
    t = trainer(loss_type=loss_type, importance_sampling_level=level, n_epochs=2)
    before = [p.detach().clone() for p in t.model.parameters()]
    metrics = t.train_step()
    assert metrics["grad_norm"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def test_sequence_level_ratio_is_one_per_completion():
    t = trainer(importance_sampling_level="sequence", n_epochs=2)
    ro = t.rollout()
    logp_old = t._logprobs(t.model, ro) + 0.1 * torch.randn(ro.mask.shape) * ro.mask  # a policy that moved
    ratios = []
    orig = t._objective
    t._objective = lambda ratio, adv, logp: (ratios.append(ratio.detach()), orig(ratio, adv, logp))[1]
    t.loss(ro.micro_batch(slice(0, len(ro.rows)), logp_old))
    r = ratios[0]
    for row, m in zip(r, ro.mask):
        assert torch.allclose(row[m], row[m][0].expand(int(m.sum())))  # one value per completion
    assert not torch.allclose(r[ro.mask], torch.ones_like(r[ro.mask]))


def test_objectives_match_their_papers():
    ratio = torch.tensor([0.5, 1.0, 1.5, 3.0], requires_grad=True)
    adv = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    loss, _, _ = clipped_surrogate(ratio, adv, 0.2, ratio_cap=2.0)  # INTELLECT-2: r capped at delta
    assert loss[3].item() == pytest.approx(2.0)  # -min(-min(3, 2), -clip(3)) = 2, not 3
    sapo = sapo_surrogate(ratio, adv)
    (g,) = torch.autograd.grad(sapo[1], ratio)
    assert g[1].item() == pytest.approx(-1.0)  # at r = 1 the gate's slope is the policy gradient's
    logp = torch.tensor([-1.0, -2.0, -0.5, -0.1], requires_grad=True)
    cispo = cispo_surrogate(ratio, adv, logp, 1.2)
    (g,) = torch.autograd.grad(cispo.sum(), logp)
    assert torch.allclose(g, -torch.tensor([0.5, 1.0, 1.2, 1.2]) * adv)  # weight capped, never zeroed


def test_entropy_bonus_raises_entropy_without_any_reward_signal():
    t = trainer(constant_reward, kl_coef=0.0, ent_coef=1.0, learning_rate=1e-2)
    ro = t.rollout()

    def entropy() -> float:  # on the same completions, before and after the update
        stats = t.loss(ro.micro_batch(slice(0, len(ro.rows)), with_entropy=True))[1]
        return stats["entropy"]

    before = entropy()
    metrics = t.update(ro)
    assert metrics["grad_norm"] > 0  # constant rewards: the entropy term alone has a gradient
    assert entropy() > before


def test_steps_per_generation_takes_several_optimizer_steps_per_batch():
    t = trainer(steps_per_generation=2, share_prompt_prefix=False)  # one trunk call per pass
    steps = []
    t.optimizer.register_step_post_hook(lambda *_: steps.append(1))
    calls = []
    t.model.base_model.register_forward_pre_hook(lambda *_: calls.append(1))
    ro = t.rollout()
    calls.clear()
    t.update(ro)
    assert len(steps) == 2
    assert len(calls) == 1 + 2  # the old log-probs once (the policy moves within the batch), 2 loss passes


def test_min_p_and_repetition_penalty():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.07, 0.03]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, min_p=0.1, generator=gen).tolist()) == {0, 1, 2}  # 0.03 < 0.1 x 0.6
    seen = torch.tensor([[True, False, False, True]])
    out = repetition_penalty_(torch.tensor([[2.0, 2.0, -1.0, -1.0]]), seen, 2.0)
    assert out.tolist() == [[1.0, 2.0, -1.0, -2.0]]
    t = trainer(**{"generation": {"repetition_penalty": 1.3, "min_p": 0.05, "max_completion_length": 6}})
    t.train_step()


def test_a_new_loss_type_is_one_registry_entry():
    """A variant registered in one place (here, in the test) is accepted by the config, trained, and
    its objective and its normalisation are the ones the registry names (checked by hand)."""
    from ppokit.errors import ConfigError
    from ppokit.functional import register_loss_type, unclipped_surrogate

    name = "test_double_pg"
    with pytest.raises(ConfigError, match="loss_type=.*'grpo'"):  # not registered yet: refused
        trainer(loss_type=name)
    register_loss_type(
        name,
        lambda ratio, adv, logp, cfg: (2.0 * unclipped_surrogate(ratio, adv), ratio < 0, ratio < 0),
        "step_token_mean",
        "twice the plain policy gradient, divided by the step's tokens",
    )
    try:
        with pytest.raises(ConfigError, match=name):  # the error lists the registered names
            trainer(loss_type="no_such_loss")
        t = trainer(loss_type=name, kl_coef=0.0)
        ro = t.rollout()
        logp = t._logprobs(t.model, ro)
        logp_old = logp + 0.1 * torch.randn(ro.mask.shape, generator=torch.Generator().manual_seed(0))
        step_tokens = 2.0 * float(ro.mask.sum())  # as if this were one of two micro-batches' tokens
        rows = slice(0, len(ro.rows))
        loss, terms = t.loss(ro.micro_batch(rows, logp_old, step_tokens=step_tokens, n_micro=2))
        # by hand: -2 r A summed over the valid tokens, over the step's tokens (no division by n_micro:
        # step_token_mean is step-normalised)
        ratio = torch.exp(logp - logp_old)
        by_hand = (-2.0 * ratio * ro.advantages[:, None] * ro.mask).sum() / step_tokens
        assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
        assert terms["loss"] == pytest.approx(by_hand.item(), rel=1e-5)
        before = [p.detach().clone() for p in t.model.parameters()]
        metrics = t.train_step()
        assert metrics["grad_norm"] > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    finally:
        LOSS_TYPES.pop(name)
    assert name not in LOSS_TYPES


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_reduces_as_aggregate_token_loss(loss_type):
    """The trainer's loss of one micro-batch is the registry's reduction of the registry's objective
    (``aggregate_token_loss``), divided by the micro-batches unless step-normalised."""
    from ppokit.functional import aggregate_token_loss, get_loss_type, reduction_of

    t = trainer(loss_type=loss_type, kl_coef=0.0)
    ro = t.rollout()
    logp = t._logprobs(t.model, ro)
    logp_old = logp + 0.1 * torch.randn(ro.mask.shape, generator=torch.Generator().manual_seed(1))
    rows, tokens = slice(0, len(ro.rows)), 3.0 * float(ro.mask.sum())
    loss, _ = t.loss(ro.micro_batch(rows, logp_old, step_tokens=tokens, n_micro=3))
    per_token = get_loss_type(loss_type).objective(
        torch.exp(logp - logp_old), ro.advantages[:, None], logp, t.config
    )[0]
    expected = aggregate_token_loss(per_token, ro.mask, loss_type, 6, tokens)
    if not reduction_of(loss_type).step_normalised:
        expected = expected / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
