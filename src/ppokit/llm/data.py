"""Prompt data: the one place that reads the rows a language-model run trains and evaluates on.

A row is a dict with a ``prompt`` key (a string, or a list of chat messages) and any other columns,
which reach the reward functions as keywords. Rows come from a ``.jsonl``, ``.json`` (a list of
objects) or ``.parquet`` file, a ``datasets.Dataset`` (or the ``train`` split of a ``DatasetDict``),
or a Python list. Every file error is a one-line ``ConfigError`` naming the file (and line).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Prompt rows of a JSONL file: one JSON object per line, each with a ``prompt`` key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts file {str(path)!r} does not exist")
    rows = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"prompts file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})"
        ) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n} is not valid JSON: {e}") from None
        if not isinstance(row, dict) or "prompt" not in row:
            raise ConfigError(f"{path}:{n} must be a JSON object with a 'prompt' key")
        rows.append(row)
    if not rows:
        raise ConfigError(f"prompts file {str(path)!r} holds no prompts")
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Prompt rows from a ``.jsonl``, ``.json`` (a list of objects) or ``.parquet`` file (any other
    suffix is read as JSONL)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"prompts file {str(path)!r} does not exist")
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "reading Parquet needs pyarrow: pip install -c constraints.txt -e '.[data]'"
            ) from None
        rows = pq.read_table(str(p)).to_pylist()
    elif p.suffix == ".json":
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
    else:
        return read_jsonl(p)
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "prompt" in r for r in rows):
        raise ConfigError(f"{path} must hold a non-empty list of objects with a 'prompt' key")
    return rows


def dataset_rows(dataset: str | Path | Iterable[Any]) -> list[Any]:
    """Rows of a ``datasets.Dataset``, a list of dicts or strings, or a file path (see ``read_rows``).
    A ``DatasetDict`` uses its ``train`` split."""
    if isinstance(dataset, (str, Path)):
        return read_rows(dataset)
    if hasattr(dataset, "keys") and "train" in dataset and not hasattr(dataset, "column_names"):
        dataset = dataset["train"]  # type: ignore[index]
    if hasattr(dataset, "column_names"):  # datasets.Dataset / IterableDataset
        return [dict(r) for r in dataset]
    return list(dataset)


__all__ = ["dataset_rows", "read_jsonl", "read_rows"]
