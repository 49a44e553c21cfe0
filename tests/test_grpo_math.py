"""GRPO's maths against hand-computed values: group advantage, k3, aggregation, clipped loss, masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppokit.functional import aggregate_token_loss, clipped_surrogate, group_normalize, kl_k3
from ppokit.functional.tokens import completion_mask, selective_log_softmax


def test_group_advantage_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv, zero_std = group_normalize(rewards, group_size=4, scale="group", eps=1e-4)
    std = math.sqrt(1 / 3)  # sample std of [1, 0, 0, 1]: deviations 0.5, Bessel-corrected
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: zero advantage
    assert zero_std.tolist() == [False] * 4 + [True] * 4


def test_group_advantage_scale_modes():
    rewards = torch.tensor([3.0, 1.0, 10.0, 14.0])
    none, _ = group_normalize(rewards, 2, scale="none")
    assert none.tolist() == [1.0, -1.0, -2.0, 2.0]
    batch, _ = group_normalize(rewards, 2, scale="batch", eps=0.0)
    assert torch.allclose(batch, none / rewards.std())


def test_k3_zero_when_equal_and_closed_form():
    logp = torch.tensor([-0.1, -2.0, -5.0])
    assert torch.equal(kl_k3(logp, logp), torch.zeros(3))
    logp_ref = torch.tensor([-0.3, -1.0, -5.5])
    d = logp_ref - logp
    assert torch.allclose(kl_k3(logp, logp_ref), torch.exp(d) - d - 1)
    # hand value for one entry: exp(-0.2) + 0.2 - 1
    assert kl_k3(logp, logp_ref)[0].item() == pytest.approx(math.exp(-0.2) + 0.2 - 1, abs=1e-7)


@settings(max_examples=200, deadline=None)
@given(st.floats(-20, 0), st.floats(-20, 0))
def test_k3_never_negative(a, b):
    # exp(d) - d - 1 >= 0 exactly; in floating point the subtraction can round to -1e-16 when d ~ 0,
    # so the bound allows a few ulps (the loss never sees more than that).
    value = kl_k3(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)).item()
    assert value >= -4 * torch.finfo(torch.float64).eps * (1 + abs(a - b))


def test_k3_unbiased_for_kl():
    # Samples x ~ p; mean of k3(logp, logq) approaches KL(p || q) computed in closed form.
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    est = kl_k3(p.log()[x], q.log()[x]).mean().item()
    exact = (p * (p / q).log()).sum().item()
    assert est == pytest.approx(exact, rel=0.02)


LOSS = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # per-sequence mean, then mean: (2 + 4) / 2
        ("bnpo", {}, (1 + 2 + 3 + 4) / 4),  # token mean over the batch
        ("dr_grpo", {"max_completion_length": 8}, (1 + 2 + 3 + 4) / (2 * 8)),  # sum / (B * L_max)
        ("dapo", {"num_items_in_batch": 20}, (1 + 2 + 3 + 4) / 20),  # whole generation batch's tokens
        ("dapo", {}, (1 + 2 + 3 + 4) / 4),
    ],
)
def test_aggregation_modes_hand_values(loss_type, kwargs, expected):
    assert aggregate_token_loss(LOSS, MASK, loss_type, **kwargs).item() == pytest.approx(expected)


def test_clipped_token_loss_hand_values():
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = torch.tensor([2.0, -2.0, 2.0, -2.0, 1.0])
    loss, low, high = clipped_surrogate(ratio, adv, 0.2, 0.28)
    # -min(r*A, clip(r, 0.8, 1.28)*A)
    assert torch.allclose(loss, torch.tensor([-1.28 * 2, 1.5 * 2, -0.5 * 2, 0.8 * 2, -1.1]))
    assert high.tolist() == [True, False, False, False, False]
    assert low.tolist() == [False, False, False, True, False]


def test_zero_advantage_gives_zero_policy_gradient():
    logp = torch.randn(3, 5, requires_grad=True)
    ratio = torch.exp(logp - logp.detach())
    loss, _, _ = clipped_surrogate(ratio, torch.zeros(3, 1), 0.2)
    aggregate_token_loss(loss, torch.ones(3, 5, dtype=torch.bool), "grpo").backward()
    assert torch.equal(logp.grad, torch.zeros(3, 5))


def test_completion_mask_runs_to_first_eos():
    eos = 1
    tokens = torch.tensor([[5, 6, 1, 0, 0], [5, 1, 1, 7, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]])
    mask, ended = completion_mask(tokens, eos)
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, True, False, True]
    mask2, _ = completion_mask(tokens, [7, 1])  # several EOS ids
    assert mask2[2].int().tolist() == [1, 1, 1, 0, 0]


def test_masked_tokens_do_not_reach_the_loss():
    loss = LOSS.clone().requires_grad_(True)
    aggregate_token_loss(loss, MASK, "bnpo").backward()
    assert torch.equal(loss.grad != 0, MASK)


def test_selective_log_softmax_matches_log_softmax():
    logits = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    ref = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(selective_log_softmax(logits, tokens), ref, atol=1e-6)
