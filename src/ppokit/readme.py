"""Regenerate the config reference tables in README.md and docs/ from the dataclass field docs and
the alias table.

``python -m ppokit.readme README.md docs/config.md ...`` rewrites, in each file, the text between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ppokit.config import ALIASES, ConfigBase, has_key


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
    """The config keys of ``cls`` as a Markdown table (README's config reference is made from it)."""
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
    for name in sys.argv[1:] or ["README.md"]:
        path = Path(name)
        path.write_text(render(path.read_text()))
