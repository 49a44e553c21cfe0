"""Token-level helpers for language-model trainers: log-probs of chosen tokens, completion masks.

Pure torch, like the rest of ``ppokit.functional``.
"""

from __future__ import annotations

import torch


def selective_log_softmax(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., tokens]`` without materialising the full log-softmax.

    ``logits [B, L, V]``, ``tokens [B, L]`` -> ``[B, L]``. Written as ``logit[token] - logsumexp``:
    for a real vocabulary (V ~ 10^5) this avoids a second ``[B, L, V]`` tensor, which is where most
    of the memory of the loss goes.
    """
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_mask(tokens: torch.Tensor, eos_id: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[B, L]`` (bool) that is true up to and including the first end-of-sequence token.

    Returns ``(mask, ended [B])``; a row without any EOS is all true and ``ended`` is false for it
    (a *truncated* completion). Tokens after the first EOS are padding and never enter a loss.
    """
    eos_ids = torch.as_tensor(eos_id if isinstance(eos_id, (list, tuple)) else [eos_id], device=tokens.device)
    is_eos = torch.isin(tokens, eos_ids)
    # cumsum counts EOS tokens seen so far; a position is kept while none came *before* it.
    before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    return before == 0, is_eos.any(dim=1)
