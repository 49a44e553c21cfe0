"""The one run loop of ppokit: classic PPO (``rl/ppo.py``), GRPO and RLHF-PPO (``llm/trainer.py``)
all train through ``RunLoop``.

What every run needs lives here once: the run directory (claim or lock, metric sinks, log trimming
on resume: ``attach``), the checkpoint cadence by steps and by seconds (``Cadence``), the stop
request of a signal (``stop_requested``, set by ``train/signals.py``; under torchrun all ranks agree
on it), the emergency checkpoint when a ``NonFiniteError`` ends the run, the checkpoint when user
code ends it (an env error, ``sys.exit()``, Ctrl-C, a second signal, a step over ``step_timeout``;
issue 34), the stall watchdog, the callback hooks (``train/callbacks.py``) and the final
checkpoint. What a run trains lives in the object the loop drives, a ``Trainable``. The loop does
its work once per step (an update of PPO, one LM step), never per environment step, so it costs
nothing measurable in the hot loop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ppokit import distributed
from ppokit.errors import EnvError, NonFiniteError, StepTimeoutError, UserCodeError
from ppokit.tracking import ProgressBar, Tracker
from ppokit.train.callbacks import as_loop_callback
from ppokit.train.files import refuse_link
from ppokit.train.rundir import RunDirLock, claim, trim_logs

# the run directory's entries ppokit writes into as directories (files are replaced or opened with
# O_NOFOLLOW: train/files.py); a link planted as one of them is refused before anything is written
LINK_FREE = ("checkpoints", "tb", "plots")
_clock = time.monotonic  # the wall-clock of checkpoint_every_seconds (tests move it)
# After this many seconds without a finished step the watchdog says so, once per stall (issue 34: an
# env.step or a reward function that never returned blocked with no message); 0 turns it off.
STALL_SECONDS_ENV = "PPOKIT_STALL_SECONDS"
STALL_SECONDS = 600.0
# What user code may raise that ends a run the loop keeps a checkpoint for (issue 34): a failing
# environment, sys.exit() anywhere in user code (a callback, a policy, a wrapper), Ctrl-C or a
# second signal (StopNow). NonFiniteError has its emergency checkpoint; a RewardFunctionError is
# checkpointed by the LM trainer that names the function.
USER_FAILURES = (EnvError, UserCodeError, SystemExit, KeyboardInterrupt, GeneratorExit)


@runtime_checkable
class Trainable(Protocol):
    """What ``RunLoop`` drives. Kept to what a loop cannot do without: a step, where the run stands,
    its state and how to write it; everything else (rollouts, generation, losses, evaluation) is the
    trainable's own business, so the classic and the language-model trainers share the loop without
    sharing their insides.

    - ``stop_requested``: a signal number once SIGINT/SIGTERM asked the run to stop after this step
      (``train/signals.py`` sets it), else None.
    - ``position() -> (done, target)``: the run's counter and where it ends, in the unit the
      checkpoint cadence counts (env steps for PPO, optimizer steps for the LM trainers); the loop
      runs while ``done < target``. A trainer with a wall-clock budget returns ``target == done``
      once it is spent.
    - ``run_step() -> metrics``: one update (PPO: a rollout and its epochs) or one LM step, its metrics
      row logged through ``RunLoop.tracker``; returns the row (callbacks see it).
    - ``state_dict()`` / ``load_state_dict(sd)``: the training state (PyTorch's idiom): a checkpoint
      is its composition, a resume its inverse.
    - ``save_checkpoint(root) -> Path``: write ``state_dict()`` (and any artifacts, e.g. an LM's
      ``save_pretrained`` model) atomically as ``root/step_<N>`` (``train/checkpoint.py``).
    """

    stop_requested: int | None

    def position(self) -> tuple[int, int]:
        """``(done, target)`` of the run's counter."""
        ...

    def run_step(self) -> dict[str, Any]:
        """One update; returns its metrics row."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The training state."""
        ...

    def load_state_dict(self, sd: dict[str, Any]) -> Any:
        """Restore ``state_dict``."""
        ...

    def save_checkpoint(self, root: Path) -> Path:
        """Write a training checkpoint under ``root``; returns its directory."""
        ...


class Cadence:
    """The one checkpoint cadence of both sides: after a step, checkpoint when the counter crossed a
    multiple of ``every`` since the last checkpoint (PPO's steps grow by a rollout at a time, so
    "crossed", not "is a multiple"), or when ``seconds`` of wall-clock passed since the last one (the
    default, 300 s, so that a killed run never loses more than a few minutes of work). 0 turns
    either off. ``last_path`` is the newest checkpoint written, of counter ``last_step``."""

    def __init__(self, every: int, seconds: float, done: int = 0):
        self.every, self.seconds = every, seconds
        self.last_step, self.last_time, self.last_path = done, _clock(), None

    def due(self, done: int) -> bool:
        """Whether a checkpoint is due at counter ``done``."""
        crossed = bool(self.every) and done // self.every > self.last_step // self.every
        overdue = bool(self.seconds) and _clock() - self.last_time >= self.seconds
        return crossed or overdue

    def saved(self, done: int, path: Path | None) -> None:
        """A checkpoint of counter ``done`` was written (``path``; None: counted from here)."""
        self.last_step, self.last_time, self.last_path = done, _clock(), path


class RunLoop:
    """The run of one ``Trainable``: its run directory (``attach``/``detach``), metric sinks
    (``tracker``), checkpoint cadence, emergency and final checkpoints, and the loop itself (``run``).
    ``logs``: the trainable's log files and their step column, ``{"metrics.csv": "step", ...}``,
    trimmed on resume. ``nonfinite_hint``: what the emergency stop's message suggests."""

    def __init__(
        self, trainable: Trainable, every: int, seconds: float, logs: dict[str, str], nonfinite_hint: str = ""
    ):
        self.trainable = trainable
        self.cadence = Cadence(every, seconds, trainable.position()[0])
        self.logs, self.nonfinite_hint = logs, nonfinite_hint
        self.run_dir: Path | None = None
        self.hooks: Any = None  # the callbacks of the running ``run`` (their on_save follows save())
        self.lock: RunDirLock | None = None
        self.tracker: Tracker | None = None

    # -- the run directory ------------------------------------------------------------------------------
    def attach(
        self,
        run_dir: str | Path,
        *,
        lock: RunDirLock | None = None,
        claim_with: tuple[str, str] | None = None,
        resume_step: int | None = None,
        **tracker_options: Any,
    ) -> None:
        """Write this run's logs and checkpoints under ``run_dir``, holding its lock until ``detach``.

        ``lock``: the lock the caller already holds (the command line claims the directory before it
        hands it over); else with ``claim_with=(config_yaml, resume_hint)`` a new run claims it
        (``rundir.claim``: refused, naming ``resume_hint``, when it holds a run); else the lock is
        taken. ``resume_step``: a resumed run, whose logs after that step are dropped (that work was
        lost) and then appended to. ``tracker_options`` go to ``Tracker``."""
        run_dir = Path(run_dir)
        for name in LINK_FREE:  # nothing ppokit writes follows a link planted in the run (issue 34)
            refuse_link(run_dir / name)
        if lock is None and claim_with is not None:
            lock = claim(run_dir, run_dir.name, claim_with[0], claim_with[1], flag="run_dir").lock
        lock = lock or RunDirLock(run_dir)  # one writer per run directory (docs/reliability.md)
        try:
            if resume_step is not None:
                trim_logs(run_dir, resume_step, self.logs)
            tracker = Tracker(run_dir, append=resume_step is not None, **tracker_options)
        except BaseException:
            lock.release()
            raise
        self.detach()
        self.run_dir, self.lock, self.tracker = run_dir, lock, tracker

    @property
    def attached(self) -> bool:
        """Whether this process holds a run directory to write (``run_dir`` stays readable after
        ``detach``: the command line plots and evaluates into it)."""
        return self.lock is not None

    @property
    def collective(self) -> bool:
        """Whether every rank writes part of each checkpoint (the trainable's ``sharded_checkpoints``:
        FSDP's shards); then all ranks save together, on rank 0's decisions."""
        return bool(getattr(self.trainable, "sharded_checkpoints", False))

    @property
    def writes(self) -> bool:
        """Whether this process takes part in writing checkpoints: it holds the run directory, or the
        checkpoints are collective."""
        return self.attached or (self.collective and distributed.info().enabled)

    def _rank0(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank for collective checkpoints (time-based cadence and the
        file system may differ between ranks; a save only some ranks join would hang), else ``value``."""
        return distributed.from_rank0(value) if self.collective else value

    def close_sinks(self) -> None:
        """Flush and close the metric writers (the lock stays held)."""
        if self.tracker is not None:
            self.tracker.close()

    def detach(self) -> None:
        """Close the metric writers and release the run directory's lock."""
        self.close_sinks()
        self.tracker = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One metrics row at ``step`` to every sink (nothing without a run directory)."""
        if self.tracker is not None:
            self.tracker.log(step, metrics)

    # -- checkpoints ------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """A checkpoint of the current state in ``RUN_DIR/checkpoints`` (None without a run directory)."""
        if not self.writes:
            return None
        path = self.trainable.save_checkpoint(self.run_dir / "checkpoints" if self.attached else None)
        self.cadence.saved(self.trainable.position()[0], path)
        if self.hooks is not None and self.attached:
            self.hooks.on_save(self.trainable, path)
        return path

    def checkpoint(self) -> Path | None:
        """A checkpoint of the current state: the newest one if it is of this very step, else a new one."""
        last, done = self.cadence.last_path, self.trainable.position()[0]
        if self._rank0(last is not None and self.cadence.last_step == done and last.exists()):
            return last
        return self.save()

    def emergency_stop(self, error: NonFiniteError) -> NonFiniteError:
        """Checkpoint the last good state (skipped steps changed nothing) and name it in the error."""
        where = "no run directory, so no checkpoint was written"
        if self.writes:  # every rank meets a non-finite step together (the guard's agreement)
            where = f"emergency checkpoint of the last good state: {self.save()}"
        return NonFiniteError(f"{error}; {where}{self.nonfinite_hint}")

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, callback: Any = None, bar: ProgressBar | None = None, headline: str = "") -> str:
        """Step the trainable until ``position()`` says done, a callback returns False or a signal
        asks to stop; checkpoint on the cadence and, with a run directory, once more at the end
        (reusing the newest when it is of the last step). Returns why it ended: ``"done"``,
        ``"callback"`` or ``"signal"``. A ``NonFiniteError`` ends it with an emergency checkpoint;
        a failure of user code (``USER_FAILURES``) with a checkpoint of the last completed step
        (``_keep``): an ``EnvError`` is re-raised naming it, ``SystemExit`` becomes a
        ``UserCodeError`` (never a silent exit 0), a ``KeyboardInterrupt`` is re-raised with the
        checkpoint in ``checkpoint_note``. A step longer than the trainable's ``config.step_timeout``
        is interrupted (``_StepTimer``: ``StepTimeoutError``); a watchdog thread says once when no
        step finished for ``PPOKIT_STALL_SECONDS`` (default 600). ``bar``: an entered
        ``ProgressBar``, moved to the counter with ``metrics[headline]``."""
        self._before, self._in_step = self.trainable.position()[0], False
        self.hooks = as_loop_callback(callback)
        watchdog = _Watchdog(_stall_seconds())
        try:
            return self._run(self.hooks, bar, headline, watchdog)
        except USER_FAILURES as e:
            where = self._keep(e)
            if isinstance(e, (EnvError, UserCodeError)):
                e.args = (f"{e.args[0] if e.args else e}; {where}", *e.args[1:])
                raise
            if isinstance(e, KeyboardInterrupt):
                e.checkpoint_note = where
                raise
            raise UserCodeError(
                f"user code raised {type(e).__name__}({_code(e)}) at step {self.trainable.position()[0]} "
                f"(sys.exit() in a callback, the policy, an environment or a wrapper ends the run as a "
                f"failure, not a success); {where}"
            ) from None
        finally:
            self.hooks = None
            watchdog.stop()

    def _run(self, hooks: Any, bar: ProgressBar | None, headline: str, watchdog: _Watchdog) -> str:
        t = self.trainable
        start, _ = t.position()
        ended = "done"
        hooks.on_start(t)
        if bar is not None:
            bar.update(start, done_since_start=0)
        while True:
            done, target = t.position()
            if t.stop_requested is not None:
                ended = "signal"
                break
            if done >= target:
                break
            hooks.on_step_begin(t)
            self._before, self._in_step = done, True
            try:
                with _StepTimer(_step_timeout(t)):
                    metrics = t.run_step()
            except NonFiniteError as e:
                raise self.emergency_stop(e) from None
            self._in_step = False
            watchdog.progress()
            done = t.position()[0]
            if self._rank0(self.attached and self.cadence.due(done)):
                self.save()
            if bar is not None:
                bar.update(done, metrics.get(headline), done_since_start=done - start)
            if not hooks.on_step(t, metrics):
                ended = "callback"
                break
            self._agree_on_stop()
        hooks.on_end(t)
        self.checkpoint()  # with a run directory, training always ends on a checkpoint
        return ended

    def _keep(self, error: BaseException) -> str:
        """After user code ended the run with ``error``: a checkpoint of the last completed step when
        the state still is that step's (between steps; or inside one, for a trainable whose counter
        moves before its parameters do, ``counter_moves_first``, while the counter has not moved:
        PPO's rollout), else the newest complete one. Returns the sentence naming it."""
        if not self.attached:
            return "no run directory, so no checkpoint was written"
        t = self.trainable
        unmoved = getattr(t, "counter_moves_first", False) and t.position()[0] == self._before
        if self.collective and distributed.info().enabled:  # the others are not in this save: it would hang
            failed = "the ranks of a sharded run cannot checkpoint when one of them fails alone; "
        elif not self._in_step or unmoved:
            try:
                return f"checkpoint of the last completed step: {self.checkpoint()}"
            except Exception as e:  # e.g. a full disk: the older checkpoints are still there
                failed = f"writing a checkpoint failed ({type(e).__name__}: {e}); "
        else:
            failed = "it stopped inside a step, so the state is no step's; "
        newest = self.cadence.last_path
        return failed + (
            f"newest complete checkpoint: {newest}"
            if newest is not None
            else f"the newest complete checkpoint in {self.run_dir / 'checkpoints'} is kept"
        )

    def _agree_on_stop(self) -> None:
        """Under torchrun a signal reaches the ranks at different moments: if any rank was asked to
        stop, all stop after this same step (SIGTERM stands in for the signal they did not get)."""
        t = self.trainable
        if distributed.info().enabled and not distributed.all_agree(t.stop_requested is None):
            t.stop_requested = t.stop_requested or int(signal.SIGTERM)


def _code(e: BaseException) -> str:
    """``sys.exit(3)`` -> ``3``; ``sys.exit("bye")`` -> ``'bye'``."""
    return repr(e.code) if isinstance(e, SystemExit) and e.code is not None else ""


def _stall_seconds() -> float:
    """The watchdog's threshold: ``PPOKIT_STALL_SECONDS`` (a number of seconds; 0: off), else 600."""
    raw = os.environ.get(STALL_SECONDS_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else STALL_SECONDS
    except ValueError:
        return STALL_SECONDS


def _step_timeout(trainable: Any) -> float:
    """The trainable's ``config.step_timeout`` in seconds (0 when it has none)."""
    return float(getattr(getattr(trainable, "config", None), "step_timeout", 0) or 0)


class _StepTimer:
    """While entered, a step running longer than ``seconds`` is interrupted with ``StepTimeoutError``
    (SIGALRM through ``setitimer``: Python code, ``time.sleep`` and waits on pipes are interrupted, so
    an ``env.step`` or a reward function that hangs is stopped where it hangs; a C extension that never
    returns to the interpreter is not). Off (a no-op) with ``seconds == 0`` and outside the main thread.
    A SIGALRM timer the program already has (pytest-timeout's, say) keeps running: its alarm is passed
    on to its handler, and its time left is restored on exit."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = seconds > 0 and threading.current_thread() is threading.main_thread()
        self.previous: Any = None
        self.other: tuple[float, float] = (0.0, 0.0)
        self.start = 0.0

    def _expired(self, signum: int, frame: Any) -> None:
        if time.monotonic() - self.start < self.seconds - 1e-3 and callable(self.previous):
            self.previous(signum, frame)  # the other timer's alarm, which came first
            return
        raise StepTimeoutError(
            f"a step took longer than step_timeout={self.seconds:g} s (stuck in env.step or a reward "
            "function?); raise step_timeout or set it to 0 for no limit"
        )

    def __enter__(self) -> _StepTimer:
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._expired)
            self.start = time.monotonic()
            self.other = signal.setitimer(signal.ITIMER_REAL, self.seconds)
            if 0 < self.other[0] < self.seconds:  # the other alarm is due first: wake for it
                signal.setitimer(signal.ITIMER_REAL, self.other[0])
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
            left, interval = self.other
            if left > 0:
                spent = time.monotonic() - self.start
                signal.setitimer(signal.ITIMER_REAL, max(left - spent, 1e-3), interval)


class _Watchdog:
    """A daemon thread that prints one line to stderr when no step finished for ``seconds`` (once per
    stall: a step finishing re-arms it). It only reads a timestamp the loop writes once per step."""

    def __init__(self, seconds: float):
        self.seconds, self.last, self.warned = seconds, _clock(), False
        self.done = threading.Event()
        self.thread = None
        if seconds > 0:
            self.thread = threading.Thread(target=self._watch, name="ppokit-watchdog", daemon=True)
            self.thread.start()

    def progress(self) -> None:
        """A step finished."""
        self.last, self.warned = _clock(), False

    def _watch(self) -> None:
        while not self.done.wait(min(5.0, self.seconds / 4)):
            idle = _clock() - self.last
            if idle >= self.seconds and not self.warned:
                self.warned = True
                print(
                    f"ppokit: no step finished for {idle:.0f} s (stuck in env.step or a reward function?); "
                    "Ctrl-C or SIGTERM stops the run with a checkpoint",
                    file=sys.stderr,
                    flush=True,
                )

    def stop(self) -> None:
        """End the thread (joined, so no thread outlives the run)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join()
