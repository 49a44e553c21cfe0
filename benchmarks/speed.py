"""The ``speed`` kind of spec: the same workloads timed with several contestants, interleaved.

A contestant is a ppokit tree (``pythonpath``, the ``src`` folder the runs import; the checkout's
``configs/`` go with it) plus optional ``--set`` overrides (``torch_threads=1``...), or a peer: a
launcher in benchmarks/peers/ (``peer``) run by the peers' venv (``python``) with ``--total-timesteps N
--out DIR``, which writes ``DIR/result.json`` with its ``steps_per_s`` (SB3 on Pong). ``nproc: P``
launches ppokit with ``torchrun --standalone --nproc_per_node P`` (data-parallel). A workload is
``ppokit train`` of a preset for ``steps`` steps (no evaluation, no progress bar; a workload's own
``set`` overrides, e.g. ``num_envs=4``, come after the contestant's) or ``ppokit grpo`` for
``grpo_steps`` GRPO steps. Every repeat runs every workload with every contestant in the spec's
order (A, B, A, B, ...), so that drift in the machine's load touches all alike; ``load: busy`` runs
beside a ``python -c "while True: pass"`` process (another user's job on one core). Each ppokit run
starts in its tree's checkout, so ``train: ENV_ID`` is that tree's default preset for the env (what
``ppokit train --env ENV_ID`` runs there); ``train: configs/X.yaml`` names the tree's file.

Each run is a fresh process; its record (steps/s from the run's own log, launch-to-exit wall seconds,
the child's CPU seconds, machine, commit, versions, load) is written to
``OUT/<workload>/<contestant>/<load>/rep<k>.json`` as it finishes; a record that exists is not run
again, so an interrupted spec resumes where it stopped. The report is a table of medians with the
min-max spread and each contestant's ratio to the first one's median; ``returns: true`` adds the
median of each run's last ``rollout/ep_rew_mean`` (the training episodes' mean return).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from common import ROOT, BusyLoop, launch, machine_lines, provenance, save_json, table_head, today


@contextmanager
def load(kind: str):
    """Nothing for ``idle``; a busy loop for ``busy``, started 2 s early (thread auto-detection sees it)."""
    if kind == "idle":
        yield None
        return
    busy = BusyLoop(warmup=2.0)
    busy.start()
    try:
        yield busy.pid
    finally:
        busy.stop()


def command(workload: dict, contestant: dict, run_dir: Path) -> list[str]:
    """The ``python -m ppokit ...`` command of one run (or the peer launcher's)."""
    if "peer" in contestant:
        steps = ["--total-timesteps", str(workload["steps"])]
        return [
            str(ROOT / contestant["python"]),
            str(ROOT / contestant["peer"]),
            *steps,
            "--out",
            str(run_dir),
        ]
    sets = [a for s in (*contestant.get("set", []), *workload.get("set", [])) for a in ("--set", s)]
    tree = Path(contestant["pythonpath"]).parent
    if "train" in workload:
        preset = workload["train"]
        config = ["--config", str(tree / preset)] if preset.endswith(".yaml") else ["--env", preset]
        args = ["train", *config, "--total-timesteps", str(workload["steps"]), "--no-eval", "--no-progress"]
    else:
        args = ["grpo", "--max-steps", str(workload["grpo_steps"]), "--no-progress"]
    launcher = [sys.executable, "-m", "ppokit"]
    if contestant.get("nproc"):  # torchrun, as the module the torch install has (no PATH lookup)
        torchrun = ["torch.distributed.run", "--standalone", f"--nproc_per_node={contestant['nproc']}"]
        launcher = [sys.executable, "-m", *torchrun, "-m", "ppokit"]
    return [*launcher, *args, "--run-dir", str(run_dir), *sets]


def measure(workload: dict, run_dir: Path, stdout: str) -> dict:
    """Steps/s of a finished run: the last ``time/fps`` of ``ppokit train``; GRPO steps per second of
    training (and the median seconds per step) from ``ppokit grpo``'s summary and metrics; a peer's
    own ``result.json``."""
    from ppokit.plotting import read_csv

    if (run_dir / "result.json").exists():  # a peer's launcher
        peer = json.loads((run_dir / "result.json").read_text())
        return {"steps_per_s": peer["steps_per_s"], "steps": peer["steps"], "peer_versions": peer["versions"]}
    metrics = read_csv(run_dir / "metrics.csv")
    if "train" in workload:
        return {
            "steps_per_s": metrics["time/fps"][-1],
            "steps": int(metrics["time/total_timesteps"][-1]),
            "ep_rew_mean": metrics["rollout/ep_rew_mean"][-1],
        }
    summary = json.loads(stdout.strip().splitlines()[-1])
    step_times = [t for t in metrics.get("step_time", []) if t == t]
    if "train_seconds" in summary:
        steps, seconds = summary["steps"], summary["train_seconds"]
    else:  # a summary without the timing: the training rows' own step times
        steps, seconds = len(step_times), sum(step_times)
    return {
        "steps_per_s": steps / seconds,
        "s_per_step": statistics.median(step_times) if step_times else None,
        "steps": steps,
    }


def run_one(workload: dict, contestant: dict, load_kind: str, busy_pid: int | None) -> dict:
    """Run one (workload, contestant) and return its record."""
    # relative paths are the repository root's
    pythonpath = (ROOT / contestant.get("pythonpath", "src")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = command(workload, {**contestant, "pythonpath": pythonpath}, run_dir)
        loadavg = os.getloadavg()[0]  # what else the machine was doing: the 1-minute load before the run
        # in the tree's own checkout, so that `--env ID` finds that tree's preset (./configs first)
        cwd = pythonpath.parent if (pythonpath.parent / "configs").is_dir() else ROOT
        # a peer runs with its own venv's libraries
        done = launch(cmd, pythonpath="" if "peer" in contestant else pythonpath, cwd=cwd, check=True)
        wall, cpu = done.wall_s, done.cpu_s
        record = measure(workload, run_dir, done.stdout)
    shown = " ".join(cmd).replace(f"{sys.executable} -m torch.distributed.run", "torchrun")
    shown = shown.replace(f"{sys.executable} -m ppokit", "ppokit").replace(str(run_dir), "RUN_DIR")
    return {
        **record,
        "wall_s": wall,
        "cpu_s": cpu,
        "load": load_kind,
        "busy_loop_pid": busy_pid,
        "loadavg_before": loadavg,
        "command": shown if "peer" in contestant else f"PYTHONPATH={pythonpath} {shown}",
        **provenance(pythonpath, ("torch", "gymnasium", "mujoco", "envpool", "transformers", "numpy")),
    }


def run(spec: dict, out: Path) -> None:
    """Run every missing (repeat, workload, load, contestant) of the spec, writing each record."""
    contestants, workloads = spec["contestants"], spec["workloads"]
    loads = spec.get("load", ["idle"])
    total = spec["repeats"] * len(workloads) * len(loads) * len(contestants)
    i = 0
    for rep in range(spec["repeats"]):
        for wname, workload in workloads.items():
            for load_kind in loads:
                todo = [c for c in contestants if not path_of(out, wname, c, load_kind, rep).exists()]
                i += len(contestants) - len(todo)
                if not todo:
                    continue
                with load(load_kind) as busy_pid:
                    for cname in todo:  # in the spec's order: A, B, A, B, ... over the repeats
                        i += 1
                        r = {
                            "contestant": cname,
                            **run_one(workload, contestants[cname], load_kind, busy_pid),
                        }
                        save_json(path_of(out, wname, cname, load_kind, rep), r)
                        print(
                            f"[{i}/{total}] {wname} {cname} {load_kind} rep {rep}: "
                            f"{r['steps_per_s']:,.1f} steps/s, {r['wall_s']:.1f} s",
                            flush=True,
                        )


def _return_cell(runs: list[dict], returns: bool) -> str:
    """`` <median return> |`` of the runs that logged one (a spec with ``returns: true``), else ''."""
    if not returns:
        return ""
    values = [r.get("ep_rew_mean") for r in runs]
    got = [v for v in values if v is not None and v == v]  # NaN: no episode finished in the run
    return f" {statistics.median(got):,.1f} |" if got else " - |"


def path_of(out: Path, workload: str, contestant: str, load_kind: str, rep: int) -> Path:
    """Where one run's record goes."""
    return out / workload / contestant / load_kind / f"rep{rep}.json"


def report(spec: dict, out: Path) -> str:
    """The Markdown table of the records found under ``out``, in the spec's order."""
    first = next(iter(spec["contestants"]))
    returns = bool(spec.get("returns"))  # a column of the training episodes' mean return
    lines = [
        f"# {spec['title']}",
        "",
        f"{spec.get('description', '').strip()}",
        "",
        f"Generated by `python benchmarks/bench.py report {spec.get('_path', 'SPEC')}` from the records "
        f"under `{out}`; {today()}.",
        "Medians over the repeats, the spread is min–max; ratio = median steps/s over the first "
        f"contestant's ({first}).",
        "",
        *table_head(
            "workload | load | contestant | runs | steps/s (median) | spread | ratio | s/step | wall s "
            "| CPU s" + (" | return (median)" if returns else "")
        ),
    ]
    records: list[dict] = []
    for wname in spec["workloads"]:
        for load_kind in spec.get("load", ["idle"]):
            base = None
            for cname in spec["contestants"]:
                runs = [
                    json.loads(p.read_text())
                    for p in sorted((out / wname / cname / load_kind).glob("rep*.json"))
                ]
                if not runs:
                    continue
                records += runs
                fps = [r["steps_per_s"] for r in runs]
                med = statistics.median(fps)
                base = med if cname == first else base
                ratio = f"{med / base:.3f}" if base else "-"
                per_step = [r["s_per_step"] for r in runs if r.get("s_per_step")]
                step_cell = f"{statistics.median(per_step):.3f}" if per_step else "-"
                lines.append(
                    f"| {wname} | {load_kind} | {cname} | {len(runs)} | {med:,.1f} "
                    f"| {min(fps):,.1f}–{max(fps):,.1f} "
                    f"| {ratio} | {step_cell} | {statistics.median(r['wall_s'] for r in runs):.1f} "
                    f"| {statistics.median(r['cpu_s'] for r in runs):.1f} |" + _return_cell(runs, returns)
                )
    lines += ["", "Contestants:", ""]
    for cname, c in spec["contestants"].items():
        commits = sorted({r["library_commit"] for r in records if r["contestant"] == cname})
        sets = f", `--set {' '.join(c['set'])}`" if c.get("set") else ""
        what = c.get("peer") or c["pythonpath"]
        lines.append(f"- {cname}: `{what}` (commit {', '.join(commits) or 'not run'}){sets}")
    lines += ["", *machine_lines(records)]
    loads = [r["loadavg_before"] for r in records if "loadavg_before" in r]
    if loads:  # ~0 on a quiet machine; a busy-loop run adds ~1 itself
        med, top = statistics.median(loads), max(loads)
        lines.append(f"1-minute load average before each run: median {med:.2f}, max {top:.2f}.")
    return "\n".join(lines) + "\n"
