"""Every code block of README.md and docs/*.md, extracted and run (issue 30: snippets that rotted).

A fenced block's info string says what it is:

- ``python``: run as a script in a fresh interpreter; ``bash``/``sh``/``shell``: run with
  ``bash -e -o pipefail``; ``yaml``/``json``: parsed (YAML by ppokit's own loader, which refuses
  duplicate keys); ``text``: output or a directory listing, not code. A fence without an info
  string is an error, so no code block escapes by accident.
- All blocks of one page run in order in one scratch directory (files written by one block are
  there for the next); ppokit's ``tests/`` folder is on ``PYTHONPATH`` for test envs.
- A page whose blocks need optional extras names them in ``test_docs_snippets.NEEDS`` (skipped
  without them; ``make test``'s dev extras have them all); checks of what a page's commands leave
  behind go in ``test_docs_snippets.AFTER``.

HTML comments right above a fence (``<!-- doc: ... -->``, one per line) say how to run it:

- ``<!-- doc: file NAME -->``: write the block to ``NAME`` in the scratch directory (a module or
  config that later blocks use) and, for Python, also import-check it.
- ``<!-- doc: continue -->``: a Python block that goes on from the previous Python block (its
  code runs first, in the same process).
- ``<!-- doc: replace OLD => NEW -->``: run with ``OLD`` replaced by ``NEW`` (small budgets: the
  page shows the real ones). The text must occur in the block.
- ``<!-- doc: check-only REASON -->``: not run, only checked, where running is impossible in a test;
  REASON is one of ``CHECK_ONLY_REASONS``. Python is compiled; shell is checked by ``bash -n``, each
  ``ppokit`` command line is parsed by ppokit's own argument parser, and each ``python PATH`` or
  ``make TARGET`` must name a file / Makefile target that exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = {"python", "bash", "sh", "shell", "yaml", "json"}
NOT_CODE = {"text", "console-output"}
# why a block may be checked instead of run: it installs software, needs hardware or a network a
# test does not have, or runs for hours
CHECK_ONLY_REASONS = {"setup", "gpu", "multi-node", "hours", "network"}
_FENCE = re.compile(r"^(`{3,})(.*)$")
_DIRECTIVE = re.compile(r"^<!--\s*doc:\s*(.*?)\s*-->$")


@dataclass
class Block:
    """One fenced block: its page, first line, language, text and the directives above it."""

    page: Path
    line: int
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def directive(self, name: str) -> list[str]:
        """The arguments of every ``name`` directive, in order."""
        return [d[len(name) :].strip() for d in self.directives if d == name or d.startswith(name + " ")]


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with their directives; a bare fence is an error."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).strip()
        start, j = i, i + 1
        while j < len(lines) and lines[j].rstrip() != fence:
            j += 1
        directives, k = [], start - 1
        while k >= 0 and (d := _DIRECTIVE.match(lines[k].strip())):
            directives.insert(0, d.group(1))
            k -= 1
        blocks.append(Block(page, start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", directives))
        i = j + 1
    return blocks


def problems(block: Block) -> list[str]:
    """What is wrong with a block's labels and directives (before anything runs)."""
    out = []
    if not block.lang:
        out.append("a fence without a language: label it (python, bash, yaml, json, text)")
    elif block.lang not in CODE | NOT_CODE:
        out.append(f"language {block.lang!r} is not one of {sorted(CODE | NOT_CODE)}")
    for reason in block.directive("check-only"):
        if reason not in CHECK_ONLY_REASONS:
            out.append(f"check-only reason {reason!r} is not one of {sorted(CHECK_ONLY_REASONS)}")
    for rule in block.directive("replace"):
        old, sep, _ = rule.partition("=>")
        if not sep or old.strip() not in block.code:
            out.append(f"replace {rule!r}: the block does not contain {old.strip()!r}")
    known = ("file", "continue", "replace", "check-only")
    for d in block.directives:
        if d.split(" ", 1)[0] not in known:
            out.append(f"unknown directive {d!r} (known: {', '.join(known)})")
    return out


def effective_code(block: Block) -> str:
    """The block's text with its ``replace`` directives applied."""
    code = block.code
    for rule in block.directive("replace"):
        old, _, new = rule.partition("=>")
        code = code.replace(old.strip(), new.strip())
    return code


def environment() -> dict[str, str]:
    """The environment snippets run in: this checkout's ppokit and test envs, no GPU, no network."""
    paths = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "MPLBACKEND": "Agg",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _run(cmd: list[str], cwd: Path, timeout: float) -> str:
    """Run ``cmd`` in ``cwd``; its stdout, or an AssertionError with the output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise AssertionError(f"exit code {proc.returncode} from {cmd[:2]}:\n{tail}")
    return proc.stdout


def _check_shell(code: str, cwd: Path) -> None:
    """``bash -n``, then each ``ppokit`` line through ppokit's parser and each script/target named."""
    _run(["bash", "-n", "-c", code], cwd, 30)
    from ppokit.cli import build_parser

    makefile = (ROOT / "Makefile").read_text()
    joined = re.sub(r"\\\n\s*", " ", code)  # continuation lines
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
            words = words[1:]
        if not words:
            continue
        if words[0] == "ppokit":
            try:
                build_parser().parse_args(words[1:])
            except SystemExit as e:
                raise AssertionError(f"`{line}` does not parse: exit {e.code}") from None
        elif words[0].startswith("python") and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"`{line}`: {words[1]} does not exist"
        elif words[0] == "make":
            for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
                    f"`{line}`: no make target {target}"
                )


def run_block(
    block: Block,
    scratch: Path,
    previous_python: str | None,
    timeout: float = 600,
    outputs: list[str] | None = None,
) -> str | None:
    """Run (or check) one block in ``scratch``; returns the Python code a ``continue`` block extends.
    The stdout of every block that runs is appended to ``outputs`` (for checks of what a page prints)."""
    assert not problems(block), problems(block)
    code = effective_code(block)
    if block.lang in NOT_CODE:
        return previous_python
    for name in block.directive("file"):
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(code)
    check_only = bool(block.directive("check-only"))
    if block.lang == "python":
        if block.directive("continue"):
            assert previous_python is not None, "`continue` needs a Python block before it"
            code = previous_python + "\n" + code
        compile(code, block.id, "exec")
        if block.directive("file"):
            name = block.directive("file")[0]
            if name.endswith(".py") and not check_only:
                module = name[:-3].replace("/", ".")
                _run([sys.executable, "-c", f"import {module}"], scratch, timeout)
            return previous_python
        if not check_only:
            (scratch / "_snippet.py").write_text(code)
            out = _run([sys.executable, "_snippet.py"], scratch, timeout)
            if outputs is not None:
                outputs.append(out)
        return code
    if block.lang in ("bash", "sh", "shell"):
        if check_only:
            _check_shell(code, scratch)
        elif not block.directive("file"):
            out = _run(["bash", "-e", "-o", "pipefail", "-c", code], scratch, timeout)
            if outputs is not None:
                outputs.append(out)
        return previous_python
    if block.lang == "yaml":
        from ppokit.config import parse_yaml

        parse_yaml(code)
    elif block.lang == "json":
        json.loads(code)
    return previous_python


__all__ = ["Block", "CHECK_ONLY_REASONS", "pages", "parse", "problems", "run_block"]
