"""README and docs/config.md stay current: their tables equal what the dataclass docs and the alias
table generate."""

from pathlib import Path

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
