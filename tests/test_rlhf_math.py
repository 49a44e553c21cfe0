"""PPO for RLHF, the token-level maths: per-token rewards, GAE over padded tokens, whitening, adaptive KL."""

from __future__ import annotations

import pytest
import torch

from ppokit.functional import adaptive_kl_coef, masked_whiten, per_token_rewards, token_gae

LENGTHS = [5, 3, 1, 4, 0]  # the last row has no valid token at all (e.g. an unscored completion)


def padded_mask(lengths: list[int], width: int = 6) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def test_per_token_rewards_put_kl_on_every_token_and_the_score_on_the_last():
    mask = padded_mask(LENGTHS)
    kl = torch.rand(mask.shape) + 0.1
    scores = torch.tensor([1.0, -2.0, 3.0, 0.5, 7.0])
    rewards = per_token_rewards(scores, kl, mask, kl_coef=0.1)
    for b, n in enumerate(LENGTHS):
        for t in range(mask.shape[1]):
            if t >= n:
                assert rewards[b, t] == 0.0, (b, t)  # padding: no KL, no score
                continue
            expected = -0.1 * kl[b, t] + (scores[b] if t == n - 1 else 0.0)
            assert torch.isclose(rewards[b, t], expected), (b, t)
    assert rewards[4].abs().sum() == 0  # a row with no token receives nothing, not even its score


def reference_gae(rewards, values, lengths, gamma, lam):
    """A plain loop per sequence over its own tokens: delta_t = r_t + gamma V_{t+1} - V_t, V_n = 0."""
    adv = torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        running = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.7), (1.0, 1.0), (0.99, 0.0)])
def test_token_gae_matches_a_reference_loop_on_padded_sequences(gamma, lam):
    gen = torch.Generator().manual_seed(3)
    mask = padded_mask(LENGTHS)
    rewards = torch.randn(mask.shape, generator=gen) * mask
    values = torch.randn(mask.shape, generator=gen)  # garbage on padding on purpose
    adv, ret = token_gae(rewards, values, mask, gamma, lam)
    expected = reference_gae(rewards, values, LENGTHS, gamma, lam)
    assert torch.allclose(adv, expected, atol=1e-5)
    assert torch.allclose(ret, (expected + values) * mask, atol=1e-5)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_token_gae_ignores_whatever_sits_in_padding():
    mask = padded_mask(LENGTHS)
    rewards, values = torch.randn(mask.shape) * mask, torch.randn(mask.shape)
    adv, _ = token_gae(rewards, values, mask)
    noisy_r = rewards + 100.0 * (~mask)
    noisy_v = values + 100.0 * (~mask)
    adv2, _ = token_gae(noisy_r, noisy_v, mask)
    assert torch.allclose(adv, adv2)


def test_with_lambda_one_and_gamma_one_the_return_is_the_sum_of_future_rewards():
    mask = padded_mask([4, 2])
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0, 0], [5.0, 6.0, 0, 0, 0, 0]])
    _, ret = token_gae(rewards, torch.randn(mask.shape), mask, gamma=1.0, gae_lambda=1.0)
    assert torch.allclose(ret[0, :4], torch.tensor([10.0, 9.0, 7.0, 4.0]))
    assert torch.allclose(ret[1, :2], torch.tensor([11.0, 6.0]))


def test_masked_whiten_normalises_valid_tokens_only():
    mask = padded_mask([5, 3, 4])
    x = torch.randn(mask.shape) * 3 + 2 + 50 * (~mask)
    out = masked_whiten(x, mask)
    valid = out[mask]
    assert abs(float(valid.mean())) < 1e-5
    assert abs(float(valid.var(unbiased=False)) - 1.0) < 1e-3
    assert (out[~mask] == 0).all()
    kept = masked_whiten(x, mask, shift_mean=False)[mask]  # rescaled only: the mean stays
    assert torch.isclose(kept.mean(), x[mask].mean(), atol=1e-4)
    assert abs(float(kept.var(unbiased=False)) - 1.0) < 1e-3


def test_adaptive_kl_coef_moves_the_coefficient_the_right_way():
    update = lambda coef, kl: adaptive_kl_coef(coef, kl, target=6.0, n_completions=100, horizon=10_000)
    high = update(0.1, 9.0)
    assert high > 0.1  # KL above target: penalise harder
    assert update(high, 3.0) < high  # below target: relax
    # the proportional error is clipped to +-0.2 (Ziegler et al. 2019, eq. in section 2.2)
    assert update(0.1, 600.0) == pytest.approx(0.1 * (1 + 0.2 * 100 / 10_000))
    assert update(0.1, 0.0) == pytest.approx(0.1 * (1 - 0.2 * 100 / 10_000))
    assert update(0.1, 6.0) == pytest.approx(0.1)  # on target: unchanged
