"""README and docs/config.md stay current: their tables equal what the dataclass docs and the alias
table generate; the code blocks of the listed docs run as written."""

import re
from pathlib import Path

import pytest

from ppokit.readme import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_tables_are_current():
    text = (ROOT / "README.md").read_text()
    assert "| `learning_rate` |" in text
    assert render(text) == text, "README config tables are stale: run `make readme`"


def test_the_alias_table_in_docs_is_current():
    text = (ROOT / "docs" / "config.md").read_text()
    assert "| `epsilon` | `clip_range` |" in text
    assert render(text) == text, "docs/config.md is stale: run `make readme`"


# -- code blocks run as written ----------------------------------------------------------------------------
# Issue 30: README's recurrent and masking snippets failed with NameError as written. Each file's
# ```python blocks run in order in one namespace (a later block may use an earlier one's names), in a
# fresh working directory, with every ``PPO.learn`` capped to a small budget so the docs can show real
# numbers. Listed: the whole of each doc file in RUNNABLE_DOCS, and the README sections in
# README_SECTIONS (the README's other blocks are not yet runnable as written).
RUNNABLE_DOCS = ["docs/migrating-from-sb3.md"]
README_SECTIONS = ["## Recurrent policies (LSTM, GRU)", "## Invalid-action masking"]
LEARN_CAP = 2048  # env steps, or two rollouts when one rollout is larger


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def doc_code(name: str) -> str:
    """The python blocks of ``name`` (a doc file, or ``README.md <heading>``), joined in order."""
    path, _, heading = name.partition(" ")
    text = (ROOT / path).read_text()
    return "\n".join(python_blocks(section(text, heading) if heading else text))


@pytest.mark.parametrize("name", [f"README.md {h}" for h in README_SECTIONS] + RUNNABLE_DOCS)
def test_doc_code_blocks_run_as_written(name, tmp_path, monkeypatch):
    from ppokit.rl.ppo import PPO

    code = doc_code(name)
    assert code.strip(), f"{name} has no python block"
    learn = PPO.learn

    def capped(self, total_timesteps=None, *args, **kwargs):
        cap = max(LEARN_CAP, 2 * self.config.rollout_size)
        return learn(self, min(int(total_timesteps or cap), cap), *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", capped)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec"), {"__name__": "__doc__"})
