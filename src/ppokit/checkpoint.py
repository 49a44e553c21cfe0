"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``<root>/<name>/`` holding ``tensors.safetensors``, ``meta.json`` and,
written last, ``manifest.json`` (file sizes and SHA-256). It is built in a temporary sibling
directory, every file fsync'ed, then renamed into place: a crash leaves either a complete checkpoint
or a ``.tmp-*`` directory that readers ignore. Readers take the newest checkpoint whose manifest
matches its files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ppokit.errors import CheckpointError

TENSORS = "tensors.safetensors"
META = "meta.json"
MANIFEST = "manifest.json"
FORMAT = "ppokit-checkpoint-v1"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    root: str | Path,
    name: str,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``root/name`` atomically; keep only the ``keep`` newest complete checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # clone: parameters may be views of one flat buffer (FlatAdam), and safetensors refuses shared storage
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    (tmp / META).write_text(json.dumps(meta, indent=1))
    files = {}
    for fname in (TENSORS, META):
        _fsync_path(tmp / fname)
        files[fname] = {"size": (tmp / fname).stat().st_size, "sha256": _sha256(tmp / fname)}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}))
    _fsync_path(tmp / MANIFEST)
    _fsync_path(tmp)
    old = root / f".old-{name}-{os.getpid()}"
    if final.exists():  # rewriting a name: move the old one aside first (a directory rename is atomic)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_path(root)
    shutil.rmtree(old, ignore_errors=True)
    if keep is not None:
        for stale in list_checkpoints(root)[:-keep]:
            # Rename first: a writer killed while deleting leaves a dot-directory readers skip.
            trash = root / f".old-{stale.name}-{os.getpid()}"
            os.replace(stale, trash)
            shutil.rmtree(trash, ignore_errors=True)
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Delete ``.tmp-*``/``.old-*`` leftovers of writers that died (killed mid-write)."""
    for p in root.iterdir():
        m = re.fullmatch(r"\.(tmp|old)-.*-(\d+)", p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def is_complete(path: str | Path) -> bool:
    """True when the manifest exists and every file it lists has the recorded size and hash."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format") != FORMAT or not {TENSORS, META} <= set(manifest["files"]):
            return False
        for fname, info in manifest["files"].items():
            f = path / fname
            if f.stat().st_size != info["size"] or _sha256(f) != info["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _step_key(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (by the step number ending their name)."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((p for p in dirs if is_complete(p)), key=_step_key)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, meta)``; raises CheckpointError for anything incomplete or not ours.

    safetensors and JSON never execute code, so a file carrying a pickle payload cannot run.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a directory")
    if not is_complete(path):
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete, corrupt or not a ppokit checkpoint")
    try:
        tensors = load_file(str(path / TENSORS))
        meta = json.loads((path / META).read_text())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {e}") from None
    return tensors, meta


def flatten_state(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict (e.g. an optimizer's) into flat tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, key: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[f"{prefix}{key}"] = obj
            return {"__tensor__": f"{prefix}{key}"}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(obj)]
        return obj

    return tensors, walk(state, "")


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state`` (dict keys keep their int/str types)."""
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict) and "__dict__" in tree:
        return {k: unflatten_state(v, tensors) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree
