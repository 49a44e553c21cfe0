"""Metric sinks: CSV (one row per update), TensorBoard, and the live console progress bar."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ppokit.train.files import atomic_file, open_append, open_rw

PROCESS_START = time.time()  # time/elapsed_s counts from here: "seconds since the process started"


class CSVLogger:
    """Append rows to a CSV file; when a row brings new keys, the header is widened in place."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.keys: list[str] = []
        if append and self.path.exists():
            drop_partial_row(self.path)
            with open(self.path, newline="") as f:
                self.keys = next(csv.reader(f), [])
        elif self.path.exists() or self.path.is_symlink():
            self.path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.keys]
        if new:
            self._widen(new)
        with open_append(self.path, newline="") as f:  # never through a planted link (issue 34)
            csv.DictWriter(f, fieldnames=self.keys).writerow({k: row.get(k, "") for k in self.keys})

    def _widen(self, new: list[str]) -> None:
        old_rows = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                old_rows = list(csv.DictReader(f))
        self.keys += new
        with atomic_file(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.keys)
            w.writeheader()
            w.writerows(old_rows)


def drop_partial_row(path: str | Path) -> None:
    """Cut a log file back to its last complete line. A full disk (or a kill) in the middle of a row
    leaves a row without its newline; appending after it glued the next row onto it (issue 34: 27
    fields in a 26-column metrics.csv). Done before a resumed run appends."""
    with open_rw(path) as f:  # never through a planted link (issue 34)
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def trim_log(path: str | Path, column: str, last: float) -> None:
    """Drop the rows of log ``path`` whose ``column`` exceeds ``last`` (rows logged after the
    checkpoint a run resumes from: that work was lost), so a resumed run's log reads as if it had
    never stopped. ``path`` is a CSV file with a header (``metrics.csv``, ``episodes.csv``) or a JSON
    Lines file (``completions.jsonl``); a row without ``column`` is kept. The one trim both sides use:
    the file is replaced atomically (a temporary sibling, then ``os.replace``), so a crash mid-trim
    leaves the old log or the new one, never half of it (the JSON Lines trim of the LM side wrote
    in place before issue 29). A missing file is left alone."""
    path = Path(path)
    if not path.is_file():
        return
    drop_partial_row(path)
    if path.suffix == ".jsonl":
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if float(json.loads(ln).get(column) or 0) <= last]
        if len(keep) < len(lines):
            _replace(path, lambda f: f.writelines(ln + "\n" for ln in keep))
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    # a row with more fields than the header (None key: a row glued onto a partial one) is no row
    keep_rows = [r for r in rows if None not in r and (not r.get(column) or float(r[column]) <= last)]
    if len(keep_rows) < len(rows):

        def write(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep_rows)

        _replace(path, write)


def _replace(path: Path, write: Callable[[Any], None]) -> None:
    """Rewrite ``path`` atomically with ``write(file)``."""
    with atomic_file(path, "w", newline="") as f:
        write(f)


class Tracker:
    """Writes metrics to ``metrics.csv`` and TensorBoard (``tb/``) in a run directory, and with
    ``report_to`` to Weights & Biases (``tracking_wandb.py``); ``log_jsonl`` appends to a
    JSON Lines table (the LM side's ``completions.jsonl``)."""

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        append: bool = False,
        enabled: bool = True,
        report_to: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ):
        """``report_to`` (the configs' key; None: TensorBoard as ``tensorboard`` says) may add wandb
        (tracking_wandb.py), which records ``config`` with the run."""
        if report_to is not None:
            tensorboard = "tensorboard" in report_to
        self.sinks: list[Any] = []
        if enabled and "wandb" in (report_to or ()):
            from ppokit.tracking_wandb import WandbSink  # wandb is slow to import: only when asked

            self.sinks.append(WandbSink(run_dir, config))
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.csv = CSVLogger(self.run_dir / "metrics.csv", append=append) if enabled else None
        self.tb = None
        self.episodes_csv: CSVLogger | None = None
        self._append = append
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import

            self.tb = SummaryWriter(str(self.run_dir / "tb"))

    @staticmethod
    def options(config: Any) -> dict[str, Any]:
        """The keyword arguments of a Tracker for a run of ``config`` (either side's): TensorBoard and
        wandb as its ``tensorboard`` and ``report_to`` say; wandb records the config."""
        return {"tensorboard": config.tensorboard, "report_to": config.report_to, "config": config.to_dict()}

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record one row; non-finite and missing values are written as-is to CSV, skipped in TB."""
        if not self.enabled:
            return
        self.csv.write(metrics)
        if self.tb is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            # One event holding every scalar of the row: ``add_scalar`` per metric writes ~24 events
            # per update, which cost ~1 ms per update (6% of a CartPole run with the zoo settings).
            values = [
                Summary.Value(tag=k, simple_value=float(v))
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and math.isfinite(v)
            ]
            self.tb._get_file_writer().add_summary(Summary(value=values), step)
        for sink in self.sinks:
            sink.log(step, metrics)

    def log_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` (one JSON object each) to ``RUN_DIR/name``."""
        if not self.enabled or not rows:
            return
        with open_append(self.run_dir / name) as f:
            f.writelines(json.dumps(row, default=str) + "\n" for row in rows)

    def log_episodes(self, episodes: list[tuple[float, int, int, float]]) -> None:
        """Append finished training episodes ``(return, length, step, unix_time)`` to episodes.csv."""
        if not self.enabled or not episodes:
            return
        if self.episodes_csv is None:
            self.episodes_csv = CSVLogger(self.run_dir / "episodes.csv", append=self._append)
        for ret, length, step, t in episodes:
            self.episodes_csv.write(
                {"step": step, "return": ret, "length": length, "time_s": round(t - PROCESS_START, 4)}
            )

    def close(self) -> None:
        """Flush and close every writer (closing twice is harmless)."""
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        for sink in self.sinks:
            sink.close()
        self.sinks = []


class ProgressBar:
    """A rich progress bar: steps done/total, steps/s, the latest headline metric, ETA.

    Without a terminal (output to a file, a pipe, a batch scheduler's log) rich draws nothing until
    the end, so a long run looked dead (issue 30); there it prints a plain line every ``plain_every``
    seconds instead, flushed at once."""

    def __init__(
        self,
        total: int,
        description: str = "train",
        metric_name: str = "return",
        enabled: bool = True,
        unit: str = "steps",
        plain_every: float = 30.0,
        console: Any = None,
    ):
        self.metric_name = metric_name
        self.unit = unit
        self.start = time.time()
        self.total, self.description = total, description
        self.plain_every, self.plain_at = plain_every, self.start
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} " + unit),
            TextColumn("{task.fields[rate]:,.0f} " + unit + "/s"),
            TextColumn("{task.fields[metric]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=not enabled,
            console=console,
        )
        self.plain = enabled and not self.progress.console.is_terminal
        if self.plain:
            self.progress.disable = True
        self.task = self.progress.add_task(description, total=total, rate=0.0, metric=f"{metric_name} -")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(
        self, completed: int, metric: float | None = None, done_since_start: int | None = None
    ) -> None:
        """Move to ``completed``; the rate counts ``done_since_start`` (default ``completed``)."""
        elapsed = max(time.time() - self.start, 1e-9)
        rate = (completed if done_since_start is None else done_since_start) / elapsed
        text = (
            f"{self.metric_name} -"
            if metric is None or not math.isfinite(metric)
            else (f"{self.metric_name} {metric:.2f}")
        )
        self.progress.update(self.task, completed=completed, rate=rate, metric=text)
        now = time.time()
        if self.plain and (now - self.plain_at >= self.plain_every or completed >= self.total):
            self.plain_at = now
            line = (
                f"{self.description}: {completed:,}/{self.total:,} {self.unit}, {rate:,.0f} {self.unit}/s, "
                f"{text}, {now - self.start:,.0f} s"
            )
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.progress.console.file.flush()
