"""README and the docs stay current and short: the config tables equal what the dataclass docs and the
alias table generate, each table lives on one page, README stays a five-minute read (issue 30) and every
relative link of README and docs/ reaches a file. (The code blocks are run by test_docs_snippets.py.)"""

import re
from pathlib import Path

from doc_snippets import pages

from ppokit.readme import PAGES, render, tables

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300  # issue 30: "README <= 300 lines"


def test_generated_tables_are_current_and_each_lives_on_one_page():
    texts = {page: (ROOT / page).read_text() for page in PAGES}
    for name in tables():
        holders = [page for page, text in texts.items() if f"<!-- {name}:begin -->" in text]
        assert len(holders) == 1, f"table {name!r} is on {holders or 'no page'}: want exactly one of {PAGES}"
    for page, text in texts.items():
        assert render(text) == text, f"{page} is stale: run `make readme`"
    assert "| `learning_rate` |" in texts["docs/config.md"]
    assert "| `epsilon` | `clip_range` |" in texts["docs/config.md"]


def test_readme_is_a_short_read_that_links_every_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is longer than a five-minute read"
    guides = "migrating-from-sb3 porting-trl own-env atari recurrent-and-masking language-models scaling-out"
    for guide in (*guides.split(), "results", "architecture", "config", "presets-and-zoo"):
        assert f"(docs/{guide}.md)" in text, f"README does not link docs/{guide}.md"
    for heading in ("## Two commands", "## Quickstart: classic RL", "## Command line", "## Where to read"):
        assert heading in text


def test_relative_links_reach_a_file():
    broken = []
    for page in pages():
        prose = re.sub(r"^(`{3,}).*?^\1", "", page.read_text(), flags=re.S | re.M)  # not in code blocks
        for link in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", link) or link.startswith("#"):
                continue  # a URL or an anchor on the same page
            if not (page.parent / link.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert not broken, broken
