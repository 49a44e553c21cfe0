"""The one benchmark runner: every study is a declared spec in ``benchmarks/specs/*.yaml``.

    python benchmarks/bench.py list                                  # the specs and what each measures
    python benchmarks/bench.py run specs/suite.yaml                  # run a spec (resumable)
    python benchmarks/bench.py run specs/speed-issue29.yaml --set contestants.after.pythonpath=/x/src
    python benchmarks/bench.py run specs/suite.yaml --dry-run        # print what would run
    python benchmarks/bench.py report                                # regenerate every docs page
    python benchmarks/bench.py report specs/table1.yaml              # ... or one spec's

A spec is YAML with a ``kind`` and a ``title``. ``kind: speed`` is measured here (benchmarks/speed.py:
contestants given by ``--pythonpath``, workloads, ``repeats`` interleaved A, B, A, B, ``load`` idle or
busy). Every other kind is a study module ``benchmarks/<kind>.py`` run with the spec's ``options``
(``{name: value}`` becomes ``--name value``; a list ``--name v1 v2``; ``true`` a bare flag) and
``args`` (positional); its ``report`` options regenerate its page from the committed raw results,
and ``page`` names that page. Every study writes one file per finished run, skips finished runs
and resumes interrupted ones, and records machine, commits, date, versions and load with each run.
``--set a.b=VALUE`` overrides a key of the spec (VALUE read as YAML).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

SPECS = ROOT / "benchmarks" / "specs"
STUDIES = (
    "suite",
    "table1",
    "side_by_side",
    "recurrent_masking",
    "grpo_vs_trl",
    "lm_memory",
    "fsdp_memory",
    "rlhf_vs_grpo",
    "pong_curve",
    "sweep",
    "batched_peers",
    "step_overhead",
)
KINDS = ("speed", *STUDIES)
SPEED_KEYS = {"contestants", "workloads", "repeats"}


class SpecError(ValueError):
    """A spec that cannot run: the message names the file, the key, the value and what is allowed."""


def load_spec(path: Path, overrides: list[str] = ()) -> dict:
    """The spec in ``path`` with the ``a.b=VALUE`` overrides applied, checked."""
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping, got {type(spec).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE (dotted key, YAML value)")
        *parents, leaf = key.split(".")
        node = spec
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    if spec.get("kind") not in KINDS:
        raise SpecError(f"{path}: kind {spec.get('kind')!r} is not one of {', '.join(KINDS)}")
    if "title" not in spec:
        raise SpecError(f"{path}: title is missing (one line saying what the spec measures)")
    if spec["kind"] == "speed":
        check_speed(path, spec)
    for key in ("options", "report"):
        if not isinstance(spec.get(key, {}), dict):
            raise SpecError(f"{path}: {key} must be a mapping of option names to values")
    spec["_path"] = path.relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else str(path)
    return spec


def check_speed(path: Path, spec: dict) -> None:
    """A speed spec names its contestants (a tree or a peer) and workloads (a preset or the GRPO demo)."""
    if not SPEED_KEYS <= set(spec):
        raise SpecError(f"{path}: kind speed needs {', '.join(sorted(SPEED_KEYS - set(spec)))}")
    for name, c in spec["contestants"].items():
        if not isinstance(c, dict) or not ({"pythonpath"} <= set(c) or {"peer", "python"} <= set(c)):
            raise SpecError(
                f"{path}: contestants.{name}={c!r}: give pythonpath (a ppokit src) or peer and python"
            )
    for name, w in spec["workloads"].items():
        if not isinstance(w, dict) or not ({"train", "steps"} <= set(w) or "grpo_steps" in w):
            raise SpecError(f"{path}: workloads.{name}={w!r}: give train and steps, or grpo_steps")
    if not isinstance(spec["repeats"], int) or spec["repeats"] < 1:
        raise SpecError(f"{path}: repeats={spec['repeats']!r}: a whole number >= 1")
    for load in spec.get("load", ["idle"]):
        if load not in ("idle", "busy"):
            raise SpecError(f"{path}: load {load!r} is not one of idle, busy")


def argv_of(options: dict, args: list = ()) -> list[str]:
    """Command-line arguments of a study module from a spec's options and positional args."""
    argv = [str(a) for a in args]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


def out_of(spec: dict) -> Path:
    """The raw-results folder of a speed spec."""
    return (ROOT / spec.get("out", f"benchmarks/out/{spec['kind']}")).resolve()


def run(spec: dict, dry_run: bool = False) -> None:
    """Run a spec: its missing runs, then its report."""
    if spec["kind"] == "speed":
        import speed

        if dry_run:
            print(yaml.safe_dump({k: spec[k] for k in ("contestants", "workloads", "repeats")}))
            return
        speed.run(spec, out_of(spec))
        return report(spec)
    argv = argv_of(spec.get("options", {}), spec.get("args", []))
    print(f"benchmarks/{spec['kind']}.py {' '.join(argv)}", flush=True)
    if not dry_run:
        importlib.import_module(spec["kind"]).main(argv)


def report(spec: dict) -> None:
    """Regenerate a spec's page from its raw results (a spec without ``report`` has none)."""
    if spec["kind"] == "speed":
        import speed

        if not out_of(spec).is_dir():
            print(f"{spec['_path']}: no records under {out_of(spec)} yet", flush=True)
            return
        text = speed.report(spec, out_of(spec))
        page = ROOT / spec["page"] if spec.get("page") else out_of(spec) / "report.md"
        page.write_text(text)
        print(text, flush=True)
    elif "report" in spec:
        importlib.import_module(spec["kind"]).main(argv_of(spec["report"]))


def specs(paths: list[str]) -> list[Path]:
    """The spec files named (relative to benchmarks/ or the working directory), or all of them."""
    if not paths:
        return sorted(SPECS.glob("*.yaml"))
    found = []
    for p in paths:
        here = Path(p)
        found.append(here if here.exists() else ROOT / "benchmarks" / p)
    return found


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("verb", choices=["run", "report", "list"])
    p.add_argument("specs", nargs="*", help="Spec files (run: exactly one; report/list: default all).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a spec key.")
    p.add_argument("--dry-run", action="store_true", help="Print what would run, run nothing.")
    a = p.parse_args(argv)
    try:
        if a.verb == "run" and len(a.specs) != 1:
            raise SpecError(f"run takes one spec, got {len(a.specs)}")
        loaded = [(path, load_spec(path, a.set)) for path in specs(a.specs)]
    except (SpecError, OSError, yaml.YAMLError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    for path, spec in loaded:
        if a.verb == "list":
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {spec['title']}")
        elif a.verb == "run":
            run(spec, a.dry_run)
        else:
            report(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
