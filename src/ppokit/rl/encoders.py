"""Encoders for observations that are not a plain vector, and the policy built on them.

``ObsEncoder(layout, cfg)`` turns the rollout's stored observations (``rl/spaces.py``) into one
feature vector: a CNN for images (uint8, scaled by 1/255 here, on the device), one-hot for discrete
leaves, the values for vectors; for Dict/Tuple spaces one encoder per leaf, concatenated (SB3's
``CombinedExtractor``). ``EncoderActorCritic`` shares the encoder between actor and critic (as SB3's
``CnnPolicy``/``MultiInputPolicy`` and CleanRL's Atari agent) and puts MLP heads on its features.

CNNs: ``nature`` is the DQN/Atari network (Mnih et al. 2015, https://www.nature.com/articles/nature14236:
32 8x8/4, 64 4x4/2, 64 3x3/1, then a linear layer), which needs images of at least 36x36;
``small`` (16 3x3/1, 32 3x3/2, then a linear layer) suits small images (MiniGrid's 7x7 views, tests).
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from ppokit.errors import ConfigError
from ppokit.rl.config import NetworkConfig
from ppokit.rl.networks import head, mlp
from ppokit.rl.policy import Policy, distribution_args
from ppokit.rl.spaces import Leaf, ObsLayout

IMAGE_ENCODERS = ("auto", "nature", "small")


def _ortho(module: nn.Module, gain: float = math.sqrt(2)) -> nn.Module:
    nn.init.orthogonal_(module.weight, gain)
    nn.init.zeros_(module.bias)
    return module


class ImageEncoder(nn.Module):
    """A CNN over one image leaf: ``[B, *leaf.shape]`` (uint8 or float pixel values) -> ``[B, features]``.

    Channels-last input is permuted to NCHW without a copy, which leaves it in PyTorch's channels-last
    memory format, the fast one for CPU convolutions (oneDNN)."""

    def __init__(self, leaf: Leaf, arch: str, features: int, ortho: bool):
        super().__init__()
        if leaf.channels == "last":
            h, w, c = leaf.shape
        elif leaf.channels == "first":
            c, h, w = leaf.shape
        else:
            (h, w), c = leaf.shape, 1
        self.channels, self.shape = leaf.channels, leaf.shape
        if arch == "auto":
            arch = "nature" if min(h, w) >= 36 else "small"
        if arch == "nature":
            if min(h, w) < 36:
                raise ConfigError(
                    f"network.image_encoder='nature' is not allowed for {h}x{w} images (needs >= 36x36); "
                    "use small or auto"
                )
            convs = [nn.Conv2d(c, 32, 8, 4), nn.Conv2d(32, 64, 4, 2), nn.Conv2d(64, 64, 3, 1)]
        elif arch == "small":
            if min(h, w) < 5:
                raise ConfigError(f"images of {h}x{w} are too small for a CNN; flatten them with a wrapper")
            convs = [nn.Conv2d(c, 16, 3, 1), nn.Conv2d(16, 32, 3, 2)]
        else:
            raise ConfigError(f"network.image_encoder={arch!r} is not allowed; use one of {IMAGE_ENCODERS}")
        layers: list[nn.Module] = []
        for conv in convs:
            layers += [_ortho(conv) if ortho else conv, nn.ReLU()]
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, c, h, w)).shape[1]
        linear = nn.Linear(n_flat, features)
        self.linear = nn.Sequential(_ortho(linear) if ortho else linear, nn.ReLU())
        self.arch, self.out_dim = arch, features
        self.channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.shape)
        if self.channels == "last":
            x = x.permute(0, 3, 1, 2)  # a view: NCHW shape, channels-last memory
        elif self.channels == "gray":
            x = x.unsqueeze(1)
        elif self.channels_last and x.shape[0] >= 32:
            # Channels-last memory makes oneDNN's CPU convolutions faster, above all their backward;
            # copied while still uint8 (a quarter of the bytes), for the update's minibatches.
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float()  # keeps the memory format
        # The 1/255 scaling folded into the first convolution's weights: conv(x / 255) with one pass
        # over the input fewer (~20% off a 256-image NatureCNN step here, docs/benchmarks_presets.md).
        conv = self.cnn[0]
        h = nn.functional.conv2d(x, conv.weight * (1.0 / 255.0), conv.bias, conv.stride)
        return self.linear(self.cnn[1:](h))


class OneHot(nn.Module):
    """Category indices ``[B, k]`` (one per discrete entry) -> concatenated one-hots ``[B, sum(nvec)]``."""

    def __init__(self, nvec: tuple[int, ...]):
        super().__init__()
        self.nvec = list(nvec)
        self.out_dim = sum(nvec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x.reshape(x.shape[0], -1).long()
        parts = [nn.functional.one_hot(idx[:, i].clamp(0, n - 1), n) for i, n in enumerate(self.nvec)]
        return torch.cat(parts, dim=-1).float()


class Flat(nn.Module):
    """A vector (Box or MultiBinary) leaf: its values, flattened, as float."""

    def __init__(self, size: int):
        super().__init__()
        self.out_dim = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float()


class ObsEncoder(nn.Module):
    """Stored observations ``[B, *layout.shape]`` -> features ``[B, out_dim]`` (see the module docstring)."""

    def __init__(self, layout: ObsLayout, cfg: NetworkConfig):
        super().__init__()
        self.layout = layout
        self.slices: list[tuple[int, int]] = []
        encoders = []
        for leaf in layout.leaves:
            if leaf.kind == "image":
                enc: nn.Module = ImageEncoder(leaf, cfg.image_encoder, cfg.cnn_features, cfg.ortho_init)
            elif leaf.kind in ("discrete", "multidiscrete"):
                enc = OneHot(leaf.nvec)
            elif leaf.kind in ("box", "multibinary"):
                enc = Flat(leaf.size)
            else:
                raise AssertionError(f"unreachable: leaf kind {leaf.kind!r} is refused by ObsLayout")
            encoders.append(enc)
            self.slices.append((leaf.offset, leaf.offset + leaf.size))
        self.encoders = nn.ModuleList(encoders)
        self.out_dim = sum(e.out_dim for e in encoders)
        self.packed = layout.kind == "packed"

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return self.encoders[0](obs)
        feats = [enc(obs[:, a:b]) for enc, (a, b) in zip(self.encoders, self.slices)]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)


class EncoderActorCritic(Policy):
    """Actor-critic on a shared ``ObsEncoder``: images, discrete, Dict and Tuple observations.

    After the encoder: the ``hidden_sizes`` MLP(s) (separate for actor and critic, or one shared with
    ``shared_trunk``), except for an observation that is one image with ``mlp_after_cnn`` false (the
    default), where the heads read the CNN's features directly (SB3's CnnPolicy, CleanRL's Atari agent).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig):
        super().__init__(observation_space, action_space, *distribution_args(cfg))
        self.cfg = cfg
        self.encoder = ObsEncoder(ObsLayout(observation_space), cfg)
        dim = self.encoder.out_dim
        image_only = self.encoder.layout.kind == "image"
        self.trunk = self.actor_body = self.critic_body = None
        if not (image_only and not cfg.mlp_after_cnn):
            if cfg.shared_trunk:
                self.trunk = mlp(dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            else:
                self.actor_body = mlp(dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
                self.critic_body = mlp(dim, cfg.hidden_sizes, cfg.activation, cfg.ortho_init)
            dim = cfg.hidden_sizes[-1]
        self.actor_head = head(dim, self.dist.out_dim, 0.01, cfg.ortho_init)
        self.critic_head = head(dim, 1, 1.0, cfg.ortho_init)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy output [B, out], value [B])`` from one encoder pass."""
        h = self.encoder(obs)
        if self.trunk is not None:
            h = self.trunk(h)
            ha = hc = h
        elif self.actor_body is not None:
            ha, hc = self.actor_body(h), self.critic_body(h)
        else:
            ha = hc = h
        return self.actor_head(ha), self.critic_head(hc).squeeze(-1)
