"""What ``ppokit tune`` leaves behind: a table of the trials (``trials.csv`` and ``trials.md``), a plot
(``trials.png``: each trial's value and the best so far) and the best trial's config as a preset YAML
(``best.yaml``: copy it to ``./configs/NAME.yaml`` and ``ppokit train --env NAME`` uses it)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import optuna

    from ppokit.rl.tune import TuneSettings


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, evaluations reported, seconds, then the config values it
    trained with (``batch_size`` as capped at the rollout size, not the sampler's raw choice)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        steps = max(t.intermediate_values) if t.intermediate_values else None
        row = {"trial": t.number, "state": t.state.name.lower(), "value": t.value, "evaluations": steps}
        row["seconds"] = None if seconds is None else round(seconds, 1)
        params = dict(t.user_attrs.get("config_params") or t.params)  # the values the trial trained with
        network = params.pop("network", None)
        if isinstance(network, dict):
            params.update({f"network.{k}": v for k, v in network.items()})
        rows.append({**row, **params})
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    """``trials.csv`` and ``trials.md`` (a Markdown table) of ``rows``."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    csv_path, md_path = out_dir / "trials.csv", out_dir / "trials.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_trials(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Each completed trial's value and the best value so far against the trial number; pruned trials
    (which have no final value) as crosses along the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["value"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["trial"] for r in done]
    ys = [r["value"] for r in done]
    ax.scatter(xs, ys, s=18, label="trial value")
    best, running = [], float("-inf")
    for y in ys:
        running = max(running, y)
        best.append(running)
    ax.step(xs, best, where="post", color="C1", label="best so far")
    pruned = [r["trial"] for r in rows if r["state"] == "pruned"]
    if pruned:
        ax.plot(pruned, [min(ys, default=0.0)] * len(pruned), "x", color="C3", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_best_preset(
    study: optuna.Study, settings: TuneSettings, config_of: Callable[[dict], Any]
) -> Path | None:
    """The best trial's config (``config_of(its params)``, at the base config's budget, not the trial's)
    as a preset YAML, with a header that says where it came from (``ppokit presets`` shows its first
    clause). ``config_of`` is the caller's (rl/tune.py): this module never imports it back."""
    try:
        best = study.best_trial
    except ValueError:  # no trial completed
        return None
    params = best.user_attrs.get("config_params")
    cfg = config_of(params)
    header = (
        f"# {cfg.env_id}: ppokit tune's best trial (study {settings.name!r}, trial {best.number}, mean "
        f"evaluation return {best.value:.2f} after {settings.budget:,} steps).\n"
        f"# Tuned over {len(study.trials)} trials; the study is in {settings.storage_url}.\n"
    )
    path = settings.out_dir / "best.yaml"
    path.write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def write_report(
    study: optuna.Study, settings: TuneSettings, config_of: Callable[[dict], Any], log: Any = print
) -> None:
    """Table, plot and best preset in ``settings.out_dir``; one line each on ``log``."""
    rows = trial_rows(study)
    csv_path, md_path = write_table(rows, settings.out_dir)
    png = plot_trials(rows, settings.out_dir / "trials.png", f"{settings.name}: {len(rows)} trials")
    log(f"trials: {md_path} ({csv_path.name}, {png.name})")
    best = write_best_preset(study, settings, config_of)
    if best is not None:
        log(f"best trial {study.best_trial.number}: {study.best_value:.2f}; preset {best}")
    else:
        log("no trial completed: no best preset written")
