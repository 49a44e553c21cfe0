"""README stays current: its config tables equal what the dataclass docs generate."""

from pathlib import Path

from ppokit.readme import render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_tables_are_current():
    text = README.read_text()
    assert "| `learning_rate` |" in text
    assert render(text) == text, "README config tables are stale: run `make readme`"
