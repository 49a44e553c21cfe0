"""Recurrent policies (LSTM, GRU): the policy interface with a state carried across an episode's steps.

The conventions (CleanRL's ``ppo_atari_lstm.py``, sb3-contrib's ``RecurrentPPO``):

- The state is one tensor ``[B, state_size]`` per batch of envs (an LSTM's ``h`` and ``c``, and the
  critic's own when it has one, side by side). ``initial_state(B)`` is zeros.
- ``episode_start [B]`` (bool) marks an observation that is the first of an episode: the state is
  reset to the initial state *before* that observation is processed. The rollout sets it after every
  termination and truncation, in both Gymnasium autoreset modes (rl/rollout.py).
- The rollout stores the state at the start of the rollout and every step's ``episode_start``; the
  update (``sequence_batch``) trains on whole env sequences in the stored order, re-running the network
  from the stored initial states with the same resets (truncated BPTT over the rollout length), so at
  the first epoch it reproduces the rollout's log-probabilities and values (ratio 1). Minibatches are
  whole env sequences (``batch_size / n_steps`` envs each). GAE is unchanged.

``RecurrentPolicy`` is the interface: a subclass implements ``step(obs, state) -> (out, value,
new_state)`` and gets ``act``, ``value`` and ``evaluate_sequences``; ``RecurrentActorCritic`` is the
built-in one (``network.recurrent: lstm | gru``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.functional import gae
from ppokit.rl.config import NetworkConfig
from ppokit.rl.encoders import ObsEncoder
from ppokit.rl.networks import ACTIVATIONS, head, mlp
from ppokit.rl.policy import Policy, distribution_args
from ppokit.rl.spaces import ObsLayout

State = torch.Tensor


class RecurrentPolicy(Policy):
    """A policy with memory (see the module docstring). Subclasses set ``state_size`` and implement
    ``step``; they may override ``evaluate_sequences`` with a faster pass that computes the same values."""

    state_size: int = 0

    def initial_state(self, batch: int) -> State:
        """The state before an episode's first observation: zeros ``[batch, state_size]``."""
        return torch.zeros(batch, self.state_size, device=next(self.parameters()).device)

    def reset_state(self, state: State | None, episode_start: torch.Tensor | None, batch: int) -> State:
        """``state`` with the rows of envs starting an episode set to the initial state."""
        if state is None:
            return self.initial_state(batch)
        if episode_start is None:
            return state
        return torch.where(episode_start.reshape(-1, 1).bool(), self.initial_state(batch), state)

    def step(self, obs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """``(out [B, dist.out_dim], value [B], new_state)`` for one step (state already reset)."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(obs, state)")

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from the initial state (the plain ``Policy`` contract; PPO does not use it)."""
        out, value, _ = self.step(obs, self.initial_state(obs.shape[0]))
        return out, value

    @torch.no_grad()
    def act(  # type: ignore[override]
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        mask: torch.Tensor | None = None,
        state: State | None = None,
        episode_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """``(actions, logp, values, new_state)``; ``state`` None is the initial state."""
        out, value, new_state = self.step(obs, self.reset_state(state, episode_start, obs.shape[0]))
        action, logp = self.dist.sample(out, self.log_std(), deterministic, mask=mask)
        return action, logp, value, new_state

    @torch.no_grad()
    def value(  # type: ignore[override]
        self, obs: torch.Tensor, state: State | None = None, episode_start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """V(s) ``[B]`` given the state before ``obs`` (bootstraps; no gradient)."""
        return self.step(obs, self.reset_state(state, episode_start, obs.shape[0]))[1]

    def evaluate(self, obs, actions, mask=None):  # noqa: D102 (a clear refusal)
        raise TypeError(
            f"{type(self).__name__} is recurrent: its log-probabilities depend on the episode so far; "
            "use evaluate_sequences(obs, actions, episode_start, initial_state)"
        )

    def evaluate_sequences(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        episode_start: torch.Tensor,
        initial_state: State,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logp, entropy, values)``, each ``[n, T]``, of stored actions along ``n`` env sequences of
        ``T`` steps (``obs [n, T, ...]``, ``episode_start [n, T]``), from ``initial_state [n, S]``,
        with gradients (truncated BPTT over ``T``)."""
        n, T = obs.shape[:2]
        state, outs, values = initial_state, [], []
        for t in range(T):
            out, value, state = self.step(obs[:, t], self.reset_state(state, episode_start[:, t], n))
            outs.append(out)
            values.append(value)
        return self._log_prob_entropy(torch.stack(outs, 1), torch.stack(values, 1), actions, mask)

    def _log_prob_entropy(self, out, values, actions, mask):
        """The distribution terms of ``out [n, T, out_dim]`` reshaped back to ``[n, T]``."""
        n, T = out.shape[:2]
        flat = lambda x: None if x is None else x.reshape(n * T, *x.shape[2:])
        logp, entropy = self.dist.log_prob_entropy(flat(out), flat(actions), self.log_std(), mask=flat(mask))
        return logp.reshape(n, T), entropy.reshape(n, T), values


# -- the built-in recurrent actor-critic ----------------------------------------------------------
CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


class RecurrentActorCritic(RecurrentPolicy):
    """Encoder -> LSTM or GRU cell -> policy and value heads.

    The encoder is the MLP of ``network.hidden_sizes``, after the observation encoder of rl/encoders.py
    for observations that are not a plain Box (a CNN for images, one-hot for discrete, Dict/Tuple per
    key; shared by actor and critic, as in ``EncoderActorCritic``; an image alone feeds the cells
    directly unless ``mlp_after_cnn``, as CleanRL's Atari LSTM agent). By default actor and critic each
    have their own MLP and recurrent cell (sb3-contrib's default: a critic LSTM apart from the actor's);
    ``recurrent_shared`` shares both, ``shared_trunk`` only the MLP. The state is
    ``[h_actor, (c_actor), h_critic, (c_critic)]`` side by side.

    The cells are ``nn.LSTMCell`` / ``nn.GRUCell`` modules (their parameters and names), but the step
    is computed here, for the actor's and the critic's cell together (their weights stacked, one
    batched matmul and one set of gate ops per step; the same formulas as PyTorch's cells, tested
    equal): on a CPU the update's cost is the number of ops per step of the sequence loop, and the
    two module calls cost three times as many. The input projection of every step is one matmul
    before the loop; only the recurrence runs step by step.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig):
        super().__init__(observation_space, action_space, *distribution_args(cfg))
        if cfg.recurrent not in CELLS:
            raise ValueError(f"network.recurrent={cfg.recurrent!r} is not one of {sorted(CELLS)}")
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"activation {cfg.activation!r} is not one of {sorted(ACTIVATIONS)}")
        self.cfg = cfg
        layout = ObsLayout(observation_space)
        self.obs_encoder = None if layout.kind == "box" else ObsEncoder(layout, cfg)
        in_dim = int(np.prod(observation_space.shape)) if layout.kind == "box" else self.obs_encoder.out_dim
        self.hidden = cfg.recurrent_hidden_size
        self.lstm = cfg.recurrent == "lstm"
        share_encoder = cfg.recurrent_shared or cfg.shared_trunk
        if layout.kind == "image" and not cfg.mlp_after_cnn:
            self.encoder, self.critic_encoder, feat = nn.Identity(), None, in_dim
        else:
            make = lambda: mlp(in_dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            self.encoder, self.critic_encoder = make(), None if share_encoder else make()
            feat = cfg.hidden_sizes[-1]
        self.core = self._cell(feat)
        self.critic_core = None if cfg.recurrent_shared else self._cell(feat)
        self.actor_head = head(self.hidden, self.dist.out_dim, 0.01, cfg.ortho_init)
        self.critic_head = head(self.hidden, 1, 1.0, cfg.ortho_init)
        self.n_cores = 1 if cfg.recurrent_shared else 2
        self.part = self.hidden * (2 if self.lstm else 1)  # the state width of one cell
        self.state_size = self.part * self.n_cores

    def _cell(self, feat: int) -> nn.Module:
        cell = CELLS[self.cfg.recurrent](feat, self.hidden)
        if self.cfg.ortho_init:  # as CleanRL's LSTM agent: orthogonal weights (gain 1), zero biases
            for name, p in cell.named_parameters():
                nn.init.orthogonal_(p, 1.0) if "weight" in name else nn.init.zeros_(p)
        return cell

    # -- the maths, for K = 1 or 2 cells at once: tensors [K, B, ...] --------------------------------
    def _weights(self) -> tuple[torch.Tensor, ...]:
        """``(w_ih [K, F, G], w_hh [K, H, G], b_x [K, 1, G], b_h [K, 1, G] | None)``; an LSTM folds
        both biases into the input projection, a GRU keeps ``b_hh`` inside its reset gate."""
        cores = [self.core] if self.critic_core is None else [self.core, self.critic_core]
        stack = lambda name: torch.stack([getattr(c, name) for c in cores])
        w_ih, w_hh = stack("weight_ih").transpose(1, 2), stack("weight_hh").transpose(1, 2)
        b_ih, b_hh = stack("bias_ih").unsqueeze(1), stack("bias_hh").unsqueeze(1)
        return (w_ih, w_hh, b_ih + b_hh, None) if self.lstm else (w_ih, w_hh, b_ih, b_hh)

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        """Encoder outputs ``[K, B, F]`` (the actor's, then the critic's when it has its own cell)."""
        x = obs.reshape(obs.shape[0], -1) if self.obs_encoder is None else self.obs_encoder(obs)
        xa = self.encoder(x)
        if self.n_cores == 1:
            return xa[None]
        return torch.stack([xa, xa if self.critic_encoder is None else self.critic_encoder(x)])

    def _recur(self, xp, h, c, w_hh, b_h):
        """One step of the cells from the input projection ``xp [K, B, G]``: ``(h, c)`` (c None for a
        GRU). PyTorch's gate order: LSTM i, f, g, o; GRU r, z, n."""
        H = self.hidden
        if self.lstm:
            gates = torch.baddbmm(xp, h, w_hh)
            sig = torch.sigmoid(gates)
            g = torch.tanh(gates[..., 2 * H : 3 * H])
            c = torch.addcmul(sig[..., H : 2 * H] * c, sig[..., :H], g)
            return sig[..., 3 * H :] * torch.tanh(c), c
        hp = torch.baddbmm(b_h, h, w_hh)
        rz = torch.sigmoid(xp[..., : 2 * H] + hp[..., : 2 * H])
        n = torch.tanh(torch.addcmul(xp[..., 2 * H :], rz[..., :H], hp[..., 2 * H :]))
        return torch.addcmul(n, rz[..., H:], h - n), None  # (1 - z) n + z h

    def _unpack(self, state: State) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = state.reshape(state.shape[0], self.n_cores, self.part).transpose(0, 1)
        return (s[..., : self.hidden], s[..., self.hidden :]) if self.lstm else (s, None)

    def _pack(self, h: torch.Tensor, c: torch.Tensor | None) -> State:
        s = torch.cat([h, c], -1) if c is not None else h
        return s.transpose(0, 1).reshape(h.shape[1], self.state_size)

    def step(self, obs: torch.Tensor, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step: ``(policy output, value, new_state)``."""
        w_ih, w_hh, b_x, b_h = self._weights()
        xp = torch.baddbmm(b_x, self._features(obs), w_ih)
        h, c = self._recur(xp, *self._unpack(state), w_hh, b_h)
        return self.actor_head(h[0]), self.critic_head(h[-1]).squeeze(-1), self._pack(h, c)

    def evaluate_sequences(self, obs, actions, episode_start, initial_state, mask=None):
        """As the base class, with the encoders, input projections and heads applied to all ``n * T``
        steps at once: only the recurrence runs step by step."""
        n, T = obs.shape[:2]
        w_ih, w_hh, b_x, b_h = self._weights()
        xp = torch.baddbmm(b_x, self._features(obs.reshape(n * T, *obs.shape[2:])), w_ih)
        xp = xp.reshape(self.n_cores, n, T, -1)
        h, c = self._unpack(initial_state)
        starts = episode_start.any(0).tolist()  # steps where some env starts an episode
        hs = []
        for t in range(T):
            if starts[t]:  # reset to the initial (zero) state before an episode's first observation
                m = episode_start[:, t].reshape(1, n, 1)
                h = h.masked_fill(m, 0.0)
                c = c.masked_fill(m, 0.0) if c is not None else None
            h, c = self._recur(xp[:, :, t], h, c, w_hh, b_h)
            hs.append(h)
        hs = torch.stack(hs, 2)  # [K, n, T, H]
        out, values = self.actor_head(hs[0]), self.critic_head(hs[-1]).squeeze(-1)
        return self._log_prob_entropy(out, values, actions, mask)


def build_recurrent_policy(
    observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig
) -> Policy:
    """The built-in recurrent policy for ``network.recurrent`` = ``lstm`` or ``gru``."""
    return RecurrentActorCritic(observation_space, action_space, cfg)


# -- the update's data: whole env sequences -------------------------------------------------------
def sequence_batch(buf, gamma: float, gae_lambda: float, device: torch.device) -> dict[str, torch.Tensor]:
    """GAE over ``[T, N]`` as for any policy, then every field env-major ``[N, T, ...]`` (whole env
    sequences, in the stored order) with the rollout's initial states ``[N, S]``: ``ppo_update``'s
    minibatches index the first dimension, so each takes whole sequences. Invalid steps (NEXT_STEP
    reset steps, skipped non-finite transitions) stay in the sequences, which the re-run must step
    through, and are left out of the loss by ``valid``."""
    buf = buf.to(device)
    advantages, returns = gae(
        buf.rewards, buf.values, buf.next_values, buf.terminated, buf.done, gamma=gamma, gae_lambda=gae_lambda
    )
    fields = {
        "obs": buf.obs,
        "actions": buf.actions,
        "logp_old": buf.logp,
        "values_old": buf.values,
        "advantages": advantages,
        "returns": returns,
        "valid": buf.valid,
        "episode_start": buf.episode_start,
    }
    if buf.masks is not None:
        fields["masks"] = buf.masks
    data = {k: v.transpose(0, 1).contiguous() for k, v in fields.items()}
    data["initial_state"] = buf.initial_state.to(device)
    return data


def is_sequence_batch(mb: dict[str, torch.Tensor]) -> bool:
    """Whether ``mb`` holds env sequences (``sequence_batch``) rather than flat transitions."""
    return "initial_state" in mb


def evaluate_batch(policy: Policy, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``(logp, entropy, values, ref)`` of a minibatch: flat transitions through ``policy.evaluate``,
    or env sequences through ``evaluate_sequences``, whose outputs and per-step reference fields
    (``ref``: logp_old, advantages, ...) are flattened to the valid steps ``[B]``. ``mask`` is passed
    only when the rollout stored masks (so a user policy without that keyword still works)."""
    kw = {"mask": mb["masks"]} if "masks" in mb else {}
    if not is_sequence_batch(mb):
        return (*policy.evaluate(mb["obs"], mb["actions"], **kw), mb)
    logp, entropy, values = policy.evaluate_sequences(
        mb["obs"], mb["actions"], mb["episode_start"], mb["initial_state"], **kw
    )
    valid = mb["valid"]
    ref = {k: v[valid] for k, v in mb.items() if k in ("logp_old", "values_old", "advantages", "returns")}
    return logp[valid], entropy[valid], values[valid], ref


def flat_valid(data: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``data[key]`` over the valid steps ``[B]`` (sequence batches) or as it is (flat batches)."""
    return data[key][data["valid"]] if is_sequence_batch(data) else data[key]
