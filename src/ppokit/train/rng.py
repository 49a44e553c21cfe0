"""Capture and restore every random number generator a run draws from, for exact resumes.

Torch's global CPU generator, every CUDA device's, numpy's legacy global RNG, Python's ``random``, and
the run's own named generators (numpy ``Generator``s and ``torch.Generator``s, e.g. the sampler of
a language-model trainer). Tensors go to safetensors, the rest to JSON (checkpoint.py).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def capture_rng(
    numpy_generators: dict[str, np.random.Generator] | None = None,
    torch_generators: dict[str, torch.Generator] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, json_tree)`` holding the state of every generator (see the module docstring)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    for name, gen in (torch_generators or {}).items():
        tensors[f"rng.generator.{name}"] = gen.get_state()
    legacy = np.random.get_state()
    version, internal, gauss = random.getstate()
    tree = {
        "numpy_legacy": [legacy[0], legacy[1].tolist(), *legacy[2:]],
        "python": [version, list(internal), gauss],
        "numpy": {name: gen.bit_generator.state for name, gen in (numpy_generators or {}).items()},
    }
    return tensors, tree


def restore_rng(
    tensors: dict[str, torch.Tensor],
    tree: dict[str, Any],
    numpy_generators: dict[str, np.random.Generator] | None = None,
    torch_generators: dict[str, torch.Generator] | None = None,
) -> None:
    """Put back what ``capture_rng`` captured (generators are updated in place)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if cuda and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    for name, gen in (torch_generators or {}).items():
        saved = tensors.get(f"rng.generator.{name}")
        if saved is not None and saved.numel() != gen.get_state().numel():
            # issue 31 (device auto): a run saved on a GPU resumes on a CPU machine, or the reverse; a
            # CUDA generator's state (Philox seed and offset, 16 bytes) does not fit a CPU generator
            # (Mersenne Twister, 5056 bytes). Keep this one as seeded; the rest of the run is exact.
            warnings.warn(
                f"ppokit: the random state of generator {name!r} was saved on another device type; it "
                "continues from its seed (the resumed run's samples differ from an uninterrupted run's)",
                UserWarning,
                stacklevel=2,
            )
        elif saved is not None:
            gen.set_state(saved)
    name, keys, *rest = tree["numpy_legacy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), *rest))
    version, internal, gauss = tree["python"]
    random.setstate((version, tuple(internal), gauss))
    for key, gen in (numpy_generators or {}).items():
        if key in tree["numpy"]:
            gen.bit_generator.state = tree["numpy"][key]
