"""One atomic, pickle-free checkpoint writer and one layout for both sides.

A checkpoint is a directory holding ``tensors.safetensors`` (every tensor), ``meta.json`` (everything
else, JSON), whatever the caller adds (``write_extra``: the language-model side writes ``model/`` with
``save_pretrained``) and, written last, ``manifest.json``: the size and SHA-256 of EVERY file in the
directory. It is built in a temporary sibling directory, every file fsync'ed, then renamed into place:
a crash leaves either a complete checkpoint or a ``.tmp-*`` directory that readers ignore and the
next writer removes. Readers take the newest checkpoint whose manifest matches all its files, so a
truncated ``model.safetensors`` makes that checkpoint incomplete and the previous one is used.

Layout of a run's training checkpoints (PPO, GRPO and RLHF-PPO alike)::

    RUN_DIR/checkpoints/step_<12-digit step>/{tensors.safetensors, meta.json, [model/], manifest.json}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
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
STEP_DIR = "step_{:012d}"


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


def _files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except the manifest, as relative paths, sorted."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _as_os_error(e: SafetensorError, path: Path) -> Exception:
    """safetensors reports a failed write (a full disk, a read-only file system) as SafetensorError
    with the OS error inside its message, which the command line showed as a traceback (issue 34):
    the OSError it stands for, naming the file, so the one-line error says "No space left on device"."""
    code = re.search(r"code: (\d+)", str(e))
    if code is None:
        return CheckpointError(f"could not write {str(path)!r}: {e}")
    number = int(code.group(1))
    return OSError(number, os.strerror(number), str(path))


def write_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint directory ``path`` atomically (replacing one of that name).

    ``write_extra(tmp_dir)`` may add files (e.g. ``tmp_dir / "model"``); the manifest covers them.
    """
    final = Path(path)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # clone: parameters may be views of one flat buffer (FlatAdam) or tied weights, and safetensors
    # refuses tensors that share storage
    try:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    except SafetensorError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written debris beside the checkpoints
        raise _as_os_error(e, tmp / TENSORS) from None
    (tmp / META).write_text(json.dumps(meta, indent=1))
    # safetensors creates its file 0600 where every other file gets 0666 less the umask (0644): another
    # user allowed to read the run was told the model is "corrupt" (issue 34). One mode for all.
    os.chmod(tmp / TENSORS, stat.S_IMODE((tmp / META).stat().st_mode))
    if write_extra is not None:
        write_extra(tmp)
    files = {}
    for rel in _files(tmp):
        _fsync_path(tmp / rel)
        files[rel.as_posix()] = {"size": (tmp / rel).stat().st_size, "sha256": _sha256(tmp / rel)}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}))
    _fsync_path(tmp / MANIFEST)
    _fsync_path(tmp)
    old = root / f".old-{final.name}-{os.getpid()}"
    if final.exists():  # rewriting a name: move the old one aside first (a directory rename is atomic)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_path(root)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(
    root: str | Path,
    name: str,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep: int | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``root/name`` atomically (``write_checkpoint``); keep only the ``keep`` newest complete ones."""
    final = write_checkpoint(Path(root) / name, tensors, meta, write_extra)
    if keep is not None:
        prune(root, keep)
    return final


def save_step_checkpoint(
    root: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], **kwargs: Any
) -> Path:
    """A training checkpoint in the shared layout ``root/step_<12 digits>`` (``save_checkpoint``'s
    ``keep`` and ``write_extra`` pass through)."""
    return save_checkpoint(root, STEP_DIR.format(step), tensors, meta, **kwargs)


def prune(root: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints under ``root``."""
    for stale in list_checkpoints(root, verify_hashes=False)[:-keep]:
        # Rename first: a writer killed while deleting leaves a dot-directory readers skip.
        trash = Path(root) / f".old-{stale.name}-{os.getpid()}"
        os.replace(stale, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: str | Path) -> None:
    """Delete ``.tmp-*``/``.old-*`` leftovers of writers that died (killed mid-write)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = re.fullmatch(r"\.(tmp|old)-.*-(\d+)", p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def is_complete(path: str | Path, verify_hashes: bool = True) -> bool:
    """True when the manifest exists, lists exactly the files present (tensors and meta among them),
    and every file has the recorded size and (with ``verify_hashes``) SHA-256."""
    return why_incomplete(path, verify_hashes) is None


def why_incomplete(path: str | Path, verify_hashes: bool = True) -> str | None:
    """Why the checkpoint ``path`` is not complete (``is_complete``), in a few words, or None when it
    is: a resume that skips it says which one and why (issue 34: it skipped silently)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        listed = manifest["files"]
        if manifest.get("format") != FORMAT or not {TENSORS, META} <= set(listed):
            return f"{MANIFEST} is not a ppokit checkpoint manifest"
        present = [p.as_posix() for p in _files(path)]
        if sorted(listed) != present:
            missing = sorted(set(listed) - set(present))
            return f"missing {', '.join(missing)}" if missing else "holds files its manifest does not list"
        for rel, info in listed.items():
            f = path / rel
            if f.stat().st_size != info["size"]:
                return f"{rel} has {f.stat().st_size} bytes, the manifest says {info['size']} (truncated?)"
            if verify_hashes and _sha256(f) != info["sha256"]:
                return f"{rel} does not match its SHA-256 in the manifest (damaged)"
        return None
    except FileNotFoundError as e:
        return f"no {Path(e.filename).name if e.filename else MANIFEST} (a write that did not finish)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"unreadable manifest ({type(e).__name__})"


def _step_key(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def list_checkpoints(root: str | Path, verify_hashes: bool = True) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (by the step number ending their name).
    ``verify_hashes=False`` checks the manifest and file sizes only (cheap for multi-GB models)."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((p for p in dirs if is_complete(p, verify_hashes)), key=_step_key)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None. Hashes are verified newest first and
    only until one passes, so a model of many GB is read once, not once per checkpoint kept."""
    for path in reversed(list_checkpoints(root, verify_hashes=False)):
        if is_complete(path):
            return path
    return None


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
