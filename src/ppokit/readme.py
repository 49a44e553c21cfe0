"""Regenerate the config reference tables in docs/ from the dataclass field docs and the alias table.

``python -m ppokit.readme [FILE ...]`` rewrites, in each file (default: ``PAGES``), the text between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers. The README links to these pages instead of
holding the tables (issue 30: a README a newcomer reads in five minutes).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ppokit.config import ALIASES, ConfigBase, has_key

# the pages that hold generated tables (paths from the repository root): PPOConfig's keys and the
# alias table in config.md, GRPOConfig's in grpo.md, RLHFPPOConfig's in rlhf_ppo.md
PAGES = ("docs/config.md", "docs/grpo.md", "docs/rlhf_ppo.md")


def tables() -> dict[str, str]:
    """Marker name -> generated Markdown. The LLM tables are added when the llm extra is present."""
    from ppokit.rl.config import PPOConfig

    out = {"config-table": markdown_table(PPOConfig)}
    classes = {"PPOConfig": PPOConfig}
    try:
        from ppokit.llm.grpo_config import GRPOConfig
        from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

        out["grpo-config-table"] = markdown_table(GRPOConfig)
        out["rlhf-ppo-config-table"] = markdown_table(RLHFPPOConfig)
        classes.update(GRPOConfig=GRPOConfig, RLHFPPOConfig=RLHFPPOConfig)
    except ImportError:
        pass
    out["alias-table"] = alias_table(classes)
    return out


def markdown_table(cls: type[ConfigBase]) -> str:
    """The config keys of ``cls`` as a Markdown table (the config references in docs/ are made from it)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, help_ in cls.fields_help():
        tp = tp.replace("|", "\\|")  # "float | None" must not split the Markdown row
        rows.append(f"| `{key}` | {tp} | `{default!r}` | {help_} |")
    return "\n".join(rows)


def alias_table(classes: dict[str, type[ConfigBase]]) -> str:
    """``ALIASES`` as a Markdown table: alias, canonical key, the configs of ``classes`` (name ->
    class) that accept it, and where the spelling comes from (docs/config.md is made from it)."""
    rows = ["| alias | canonical key | accepted by | spelling from |", "|---|---|---|---|"]
    for alias, (target, source) in ALIASES.items():
        users = ", ".join(name for name, cls in classes.items() if has_key(cls, target)) or "none"
        rows.append(f"| `{alias}` | `{target}` | {users} | {source} |")
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` with every known marker block replaced by its generated table."""
    for name, table in tables().items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    for name in sys.argv[1:] or PAGES:
        path = Path(name)
        path.write_text(render(path.read_text()))
