"""FlatAdam does exactly what torch.optim.Adam (+ clip_grad_norm_) does."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ppokit.rl.fast.optim import FlatAdam
from ppokit.train.step import clip_grad_norm


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def test_flat_adam_matches_torch_adam_with_clipping():
    a, b = _net(), _net()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    ours = FlatAdam(list(a.parameters()), lr=3e-2, betas=(0.8, 0.99), eps=1e-5)
    ref = torch.optim.Adam(b.parameters(), lr=3e-2, betas=(0.8, 0.99), eps=1e-5)
    x = torch.randn(16, 3)
    for i in range(8):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            (net(x * (i + 1)).pow(2).sum()).backward()
        norm_ours = clip_grad_norm([ours.flat_grad], 0.5)
        norm_ref = torch.nn.utils.clip_grad_norm_(list(b.parameters()), 0.5)
        assert torch.allclose(norm_ours.float(), norm_ref, rtol=1e-5)  # ours is float64
        ours.step()
        ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p, q)
    assert not torch.allclose(list(a.parameters())[0], list(_net().parameters())[0])


def test_state_dict_round_trip_continues_identically():
    a = _net()
    opt = FlatAdam(list(a.parameters()), lr=1e-2)
    x = torch.randn(4, 3)
    for _ in range(3):
        opt.zero_grad()
        a(x).sum().backward()
        opt.step()
    b = _net()
    b.load_state_dict(a.state_dict())
    opt_b = FlatAdam(list(b.parameters()), lr=1.0)
    opt_b.load_state_dict(opt.state_dict())
    assert opt_b.param_groups[0]["lr"] == 1e-2
    for net, o in ((a, opt), (b, opt_b)):
        o.zero_grad()
        net(x).sum().backward()
        o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_huge_finite_gradients_are_clipped_not_reported_non_finite():
    """A float32 sum of squares of gradients ~1e20 overflows; the clipped norm must not."""
    net = nn.Linear(3, 2)
    opt = FlatAdam(list(net.parameters()), lr=1e-3)
    opt.flat_grad.fill_(1e20)
    norm = clip_grad_norm([opt.flat_grad], max_norm=0.5)
    assert torch.isfinite(norm) and float(norm) > 1e20
    assert abs(float(torch.linalg.vector_norm(opt.flat_grad.double())) - 0.5) < 1e-3


def _stepped_flat(steps: int = 3) -> tuple[nn.Module, FlatAdam, torch.Tensor]:
    net = _net()
    opt = FlatAdam(list(net.parameters()), lr=1e-2, betas=(0.8, 0.99), eps=1e-5)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()
    return net, opt, x


def test_a_flat_adam_state_loads_into_torch_adam_and_continues_alike():
    """Checkpoints written when FlatAdam trained every classic policy load into the torch.optim.Adam
    the autograd policies use now (the flat moments split into the parameters' exactly)."""
    from ppokit.rl.update import PolicyAdam

    net, flat, x = _stepped_flat()
    twin = _net()
    twin.load_state_dict(net.state_dict())
    adam = PolicyAdam(twin.parameters(), lr=1.0)
    adam.load_state_dict(flat.state_dict())
    assert adam.param_groups[0]["lr"] == 1e-2 and adam.param_groups[0]["betas"] == (0.8, 0.99)
    sizes = [p.numel() for p in twin.parameters()]
    for p, avg in zip(twin.parameters(), flat.exp_avg.split(sizes)):
        assert torch.equal(adam.state[p]["exp_avg"], avg.view_as(p))
        assert float(adam.state[p]["step"]) == 3
    for model, opt in ((net, flat), (twin, adam)):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    # and back: a torch.optim.Adam state into FlatAdam
    again = FlatAdam(list(_net().parameters()), lr=1.0)
    again.load_state_dict(adam.state_dict())
    assert again.steps == 4 and torch.allclose(again.exp_avg, flat.exp_avg)


def test_an_optimizer_state_that_does_not_fit_is_a_checkpoint_error():
    import pytest

    from ppokit.errors import CheckpointError
    from ppokit.rl.update import PolicyAdam

    _, flat, _ = _stepped_flat()
    other = nn.Linear(5, 5)  # another number of parameters
    with pytest.raises(CheckpointError, match="does not fit"):
        PolicyAdam(other.parameters(), lr=1e-3).load_state_dict(flat.state_dict())
    with pytest.raises(CheckpointError, match="does not fit"):
        FlatAdam(list(other.parameters()), lr=1e-3).load_state_dict(flat.state_dict())
    with pytest.raises(CheckpointError):
        PolicyAdam(other.parameters(), lr=1e-3).load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(CheckpointError):
        FlatAdam(list(other.parameters()), lr=1e-3).load_state_dict({"state": {}, "param_groups": []})
