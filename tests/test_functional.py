"""The shared functional core against values computed by hand and plain reference loops."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ppokit.functional import (
    approx_kl,
    clip_fraction,
    discounted_returns,
    explained_variance,
    gae,
    kl_k1,
    kl_k2,
    kl_k3,
    masked_mean,
    normalize,
    policy_loss,
    value_loss,
)


def t(*x):
    return torch.tensor(x, dtype=torch.float32)


def test_clip_objective_matches_hand_values():
    # ratios e^0.5=1.6487 (clipped to 1.2 for A>0), e^-0.5=0.6065 (clipped to 0.8 for A<0), 1.0
    logp_old = t(0.0, 0.0, 0.0, 0.0)
    logp = t(0.5, -0.5, 0.0, 0.5)
    adv = t(2.0, -1.0, 3.0, -1.0)
    loss, ratio, _ = policy_loss(logp, logp_old, adv, "clip", 0.2)
    r = torch.exp(logp)
    # min(r*A, clip(r)*A): A>0 high ratio -> 1.2*2; A<0 low ratio -> min(-0.6065, -0.8) = -0.8;
    # ratio 1 -> 3; A<0 high ratio -> min(-1.6487, -1.2) = -1.6487 (unclipped, pessimistic)
    expected = -torch.tensor([2.4, -0.8, 3.0, -float(r[3])])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(ratio, r)


def test_unclipped_and_kl_penalty_objectives():
    logp_old = t(-1.0, -2.0)
    logp = t(-0.5, -2.5)
    adv = t(1.0, 2.0)
    r = torch.exp(logp - logp_old)
    loss, _, kl = policy_loss(logp, logp_old, adv, "none")
    assert torch.allclose(loss, -r * adv)
    # k3 estimate of KL(old || new) from samples of old: r - 1 - log r
    expected_kl = r - 1 - torch.log(r)
    for objective in ("kl_penalty", "kl_adaptive"):
        loss, _, kl = policy_loss(logp, logp_old, adv, objective, kl_coef=0.5)
        assert torch.allclose(kl, expected_kl, atol=1e-6)
        assert torch.allclose(loss, -r * adv + 0.5 * expected_kl, atol=1e-6)
    with pytest.raises(ValueError, match="objective"):
        policy_loss(logp, logp_old, adv, "clipped")


def test_value_loss_modes_and_clipping():
    v, ret, v_old = t(1.0, 3.0, 0.0), t(2.0, 0.0, 0.1), t(0.0, 2.5, 0.0)
    mse, clipped = value_loss(v, ret)
    assert torch.allclose(mse, 0.5 * (v - ret) ** 2) and not clipped.any()
    huber, _ = value_loss(v, ret, loss_type="huber", huber_delta=1.0)
    # |err| = 1, 3, 0.1 -> 0.5*1, 3-0.5, 0.5*0.01
    assert torch.allclose(huber, t(0.5, 2.5, 0.005))
    loss, clipped = value_loss(v, ret, v_old, vf_clip_range=0.5)
    # clipped predictions: 0.5, 2.5 (3 clipped to 2.5+0.5=3.0 -> stays 3.0), 0.0
    vc = t(0.5, 3.0, 0.0)
    expected = torch.maximum(0.5 * (v - ret) ** 2, 0.5 * (vc - ret) ** 2)
    assert torch.allclose(loss, expected)
    assert clipped.tolist() == [True, False, False]


def _gae_reference(r, v, nv, term, done, gamma, lam):
    T, N = r.shape
    adv = torch.zeros(T, N)
    for n in range(N):
        running = 0.0
        for i in reversed(range(T)):
            delta = r[i, n] + gamma * nv[i, n] * (0.0 if term[i, n] else 1.0) - v[i, n]
            running = delta + gamma * lam * (0.0 if done[i, n] else 1.0) * running
            adv[i, n] = running
    return adv


def test_gae_matches_reference_loop_with_terminations_and_truncations():
    g = torch.Generator().manual_seed(0)
    T, N = 23, 5
    r, v, nv = (torch.randn(T, N, generator=g) for _ in range(3))
    term = torch.rand(T, N, generator=g) < 0.1
    trunc = (torch.rand(T, N, generator=g) < 0.1) & ~term
    done = term | trunc
    adv, ret = gae(r, v, nv, term, done, gamma=0.97, gae_lambda=0.9)
    ref = _gae_reference(r, v, nv, term, done, 0.97, 0.9)
    assert torch.allclose(adv, ref, atol=1e-5)
    assert torch.allclose(ret, ref + v, atol=1e-5)
    # A truncation bootstraps (next value used); a termination does not.
    adv_all_term, _ = gae(r, v, nv, done, done, gamma=0.97, gae_lambda=0.9)
    assert not torch.allclose(adv_all_term, adv)


def test_discounted_returns():
    r = t(1.0, 1.0, 1.0).unsqueeze(1)
    done = torch.tensor([[False], [True], [False]])
    out = discounted_returns(r, done, 0.5, last_value=2.0)
    assert torch.allclose(out.squeeze(1), t(1.5, 1.0, 2.0))


def test_normalize_is_safe_for_single_elements():
    assert torch.equal(normalize(t(3.0)), t(3.0))
    x = normalize(t(1.0, 2.0, 3.0, 4.0))
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std()) - 1) < 1e-4


def test_kl_estimators():
    logp = torch.log(t(0.2, 0.5, 0.3))
    logq = torch.log(t(0.4, 0.4, 0.2))
    assert torch.allclose(kl_k3(logp, logp), torch.zeros(3))
    assert (kl_k3(logp, logq) >= 0).all() and (kl_k2(logp, logq) >= 0).all()
    log_r = logq - logp
    assert torch.allclose(kl_k3(logp, logq), torch.exp(log_r) - log_r - 1)
    assert torch.allclose(kl_k1(logp, logq), logp - logq)
    # Unbiased: the p-weighted mean of k1 and k3 equals the exact KL(p||q).
    p = logp.exp()
    exact = (p * (logp - logq)).sum()
    assert torch.allclose((p * kl_k3(logp, logq)).sum(), exact, atol=1e-6)
    assert torch.allclose((p * kl_k1(logp, logq)).sum(), exact, atol=1e-6)


def test_diagnostics():
    assert float(clip_fraction(t(1.0, 1.3, 0.7, 1.1), 0.2)) == 0.5
    assert float(approx_kl(t(0.0, 0.0), t(0.0, 0.0))) == 0.0
    ret = t(1.0, 2.0, 3.0)
    assert float(explained_variance(ret, ret)) == 1.0
    assert abs(float(explained_variance(torch.full((3,), 2.0), ret))) < 1e-6
    assert torch.isnan(explained_variance(ret, torch.ones(3)))
    assert float(masked_mean(t(1.0, 5.0, 3.0), torch.tensor([True, False, True]))) == 2.0
    assert float(masked_mean(t(1.0), torch.tensor([False]))) == 0.0


def test_functional_imports_torch_only():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('gymnasium', 'transformers', 'numpy_financial'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ppokit.functional\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'transformers')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_k3_is_never_negative_for_nearly_equal_log_probs():
    logp = torch.linspace(-5, -0.1, 1000, dtype=torch.float64)
    for delta in (1e-12, 1e-9, -1e-12, -1e-9):
        assert (kl_k3(logp, logp + delta) >= 0).all()


def test_group_normalize_equal_rewards_give_zero_even_without_eps():
    from ppokit.functional import group_normalize

    adv, zero_std = group_normalize(t(1.0, 1.0, 0.0, 2.0), 2, "group", eps=0.0)
    assert adv[:2].tolist() == [0.0, 0.0] and zero_std.tolist() == [True, True, False, False]
    assert torch.isfinite(adv).all()
