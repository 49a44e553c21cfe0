"""What every benchmark study shares: launching and timing a run, the competing load, machine and
version facts, result files, and the Markdown tables and matplotlib figures of the pages."""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def machine() -> str:
    """CPU model and core count, e.g. 'AMD EPYC ... x 2 cores'."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def machine_lines(runs: list[dict]) -> list[str]:
    """One line per distinct machine, library versions and run note among these runs."""
    machines = {
        f"{r['machine']}; {r['versions']}" + (f"; note: {r['note']}" if r.get("note") else "") for r in runs
    }
    return [f"Machine: {m}." for m in sorted(machines)]


def versions(packages: list[str]) -> str:
    """'python 3.11.7, torch 2.13.0, ...' for the installed packages among ``packages``."""
    parts = [f"python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def git_commit(path: Path = ROOT, short: bool = False) -> str:
    """Commit of the git checkout holding ``path`` ('unknown' outside git), with '+dirty' when its
    tracked files under ``path`` differ from it. The one helper every study records runs with."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short" if short else "--verify", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit + ("+dirty" if dirty and commit != "unknown" else "")


def today() -> str:
    """The current UTC time as the reports print it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a half-written file is never taken for a finished run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def provenance(
    pythonpath: Path | None = None, packages: tuple[str, ...] = ("torch", "gymnasium", "numpy")
) -> dict:
    """What every per-run record carries: date, machine, library versions, the commit of the harness
    and (with ``pythonpath``) of the library that ran."""
    record = {"date": today(), "machine": machine(), "versions": versions(list(packages))}
    record["harness_commit"] = git_commit(ROOT)
    if pythonpath is not None:
        record["library_commit"] = git_commit(pythonpath)
    return record


def children_cpu() -> float:
    """CPU-seconds (user + system) the finished child processes of this process have used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Launched:
    """A finished run: exit code (``"timeout"`` when killed at its limit), launch-to-exit wall seconds,
    its CPU seconds, and its output when it was not sent to a log file."""

    rc: int | str
    wall_s: float
    cpu_s: float
    stdout: str = ""
    stderr: str = ""


def launch(
    cmd: list[str],
    *,
    pythonpath: Path | str | None = None,
    cwd: Path = ROOT,
    log: Path | None = None,
    timeout: float | None = None,
    env: dict | None = None,
    check: bool = False,
) -> Launched:
    """Run one benchmark process, timed from just before its launch, so that interpreter start-up and
    imports count; the one way every study starts a run. ``BENCH_T0`` (the epoch time just before the
    launch) lets a driver count its own clock from the same instant (benchmarks/ppokit_run.py,
    benchmarks/peers/). ``pythonpath`` picks the ppokit tree the run imports; ``log`` takes stdout and
    stderr together (else both are captured); ``check`` raises on a non-zero exit with the stderr tail."""
    env = {**os.environ, **(env or {}), "BENCH_T0": repr(time.time()), "PYTHONUNBUFFERED": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115 - closed below
    t0, cpu0 = time.perf_counter(), children_cpu()
    try:
        done = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE, text=True, env=env,
            cwd=cwd, timeout=timeout,
        )  # fmt: skip
        rc, stdout, stderr = done.returncode, done.stdout or "", done.stderr or ""
    except subprocess.TimeoutExpired:
        rc, stdout, stderr = "timeout", "", ""
    finally:
        if log is not None:
            out.close()
    run = Launched(rc, time.perf_counter() - t0, children_cpu() - cpu0, stdout, stderr)
    if check and rc != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {rc}: {stderr[-2000:]}")
    return run


BUSY = "while True: pass"


class BusyLoop:
    """The competing CPU-bound process of the runs "under load" (another user's job on one core):
    started before them, stopped after.

    With ``external`` (``--load-pid``) the load is a process the user already runs (e.g. a long
    training pinned to one core with ``taskset``): it gets SIGCONT before the load runs and SIGSTOP
    before the idle ones, so the idle runs stay alone, and SIGCONT when the harness ends. ``warmup``:
    seconds to wait after starting the loop, so that a run launched next already sees a core taken
    (its thread auto-detection included)."""

    def __init__(self, external: int | None = None, warmup: float = 1.0) -> None:
        self.proc: subprocess.Popen | None = None
        self.external, self.warmup = external, warmup
        self.paused: list[list[float]] = []  # [stopped at, continued at] of the external process

    def start(self) -> None:
        """Let the load run (start the loop, or continue the external process)."""
        if self.external is not None:
            if self.paused and len(self.paused[-1]) == 1:
                os.kill(self.external, signal.SIGCONT)
                self.paused[-1].append(time.time())
                time.sleep(1.0)
        elif self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-c", BUSY])
            time.sleep(self.warmup)

    def stop(self) -> None:
        """No load (stop the loop, or SIGSTOP the external process)."""
        if self.external is not None:
            if not self.paused or len(self.paused[-1]) == 2:
                os.kill(self.external, signal.SIGSTOP)
                self.paused.append([time.time()])
        elif self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def release(self) -> None:
        """At the end: the harness's own loop stops, an external load goes on running."""
        if self.external is not None:
            self.start()
        else:
            self.stop()

    @property
    def pid(self) -> int | None:
        """The running load's process id (None while there is none or it is stopped)."""
        if self.external is not None:
            return None if self.paused and len(self.paused[-1]) == 1 else self.external
        return self.proc.pid if self.proc is not None else None


def table_head(*columns: str) -> list[str]:
    """The first two lines of a Markdown table (every page's tables): the names given, each argument
    one name or several separated by `` | ``."""
    names = " | ".join(columns)
    return [f"| {names} |", "|" + "---|" * (names.count(" | ") + 1)]


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported only by the studies that plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int, tight: bool = True) -> None:
    """Lay out (unless the figure has its own layout engine), write ``path`` and free the figure."""
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
