"""Read one finished benchmark run, whatever its library, into the same record.

Every library is measured the same way: from its episode log (``step, return, length, time_s``
with time counted from the launch of the process), the time and step at which the mean of the last
100 training-episode returns first reaches the target (CartPole's 475), its final evaluation, and the
evaluations of its checkpoints (``[time_s, eval_mean, step]``; goal 4 reads the first that reaches
the env's target with ``first_eval_reaching``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

TARGET, WINDOW = 475.0, 100  # CartPole-v1 is "solved" at a last-100 training mean of 475


def read_rows(path: Path) -> list[dict[str, float]]:
    """A CSV file as a list of rows of floats (missing file: no rows)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def first_reaching(episodes: list[dict[str, float]], target: float = TARGET, window: int = WINDOW):
    """``(time_s, step)`` when the mean of the last ``window`` episode returns first reaches
    ``target``, or ``(None, None)``. Episodes are taken in the order they finished."""
    episodes = sorted(episodes, key=lambda e: (e["time_s"], e["step"]))
    total = 0.0
    for i, e in enumerate(episodes):
        total += e["return"]
        if i >= window:
            total -= episodes[i - window]["return"]
        if i >= window - 1 and total / window >= target:
            return e["time_s"], int(e["step"])
    return None, None


def first_eval_reaching(curve: list[list[float]], target: float) -> tuple[float | None, int | None]:
    """``(time_s, step)`` of the first checkpoint (in step order) whose evaluation reaches ``target``."""
    for t, mean, step in sorted(curve, key=lambda c: c[2]):
        if mean >= target:
            return t, int(step)
    return None, None


def rolling_curve(
    episodes: list[dict[str, float]], window: int = WINDOW, points: int = 200
) -> list[list[float]]:
    """``[time_s, mean of the last window returns]`` at up to ``points`` episodes, for plots."""
    episodes = sorted(episodes, key=lambda e: (e["time_s"], e["step"]))
    out, stride = [], max(1, len(episodes) // points)
    for i in range(0, len(episodes), stride):
        recent = episodes[max(0, i - window + 1) : i + 1]
        out.append([round(episodes[i]["time_s"], 3), sum(e["return"] for e in recent) / len(recent)])
    return out


def parse_run(library: str, out: Path) -> dict:
    """The record of one finished run in ``out`` (its run directory)."""
    if library == "ppokit":
        bench = json.loads((out / "bench.json").read_text())
        offset = bench["process_start_offset_s"]  # ppokit times from its import; we from launch
        episodes = [{**e, "time_s": e["time_s"] + offset} for e in read_rows(out / "episodes.csv")]
        curve_rows = read_rows(out / "bench_checkpoints.csv")
        ev = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else None
        record = {
            "fps": bench["fps"],
            "total_timesteps": bench["total_timesteps"],
            "train_end_s": bench["train_end_s"],
            "eval_mean": ev["mean_return"] if ev else None,
            "eval_std": ev["std_return"] if ev else None,
            "capped": bench.get("capped", False),
            "torch_threads_seen": bench.get("torch_threads_seen"),
        }
    else:  # the peers' drivers write result.json, episodes.csv and checkpoints.csv themselves
        result = json.loads((out / "result.json").read_text())
        episodes = read_rows(out / "episodes.csv")
        curve_rows = read_rows(out / "checkpoints.csv")
        keys = ("fps", "total_timesteps", "train_end_s", "eval_mean", "eval_std", "capped")
        record = {k: result.get(k) for k in keys}
        record["versions"] = result.get("versions")
    t, step = first_reaching(episodes)
    record.update(
        time_to_target=t,
        steps_to_target=step,
        episodes=len(episodes),
        train_curve=rolling_curve(episodes),
        eval_curve=[[r["time_s"], r["eval_mean"], int(r["step"])] for r in curve_rows],
    )
    return record
