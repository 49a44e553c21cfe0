"""Regenerate the config reference tables in README.md and docs/ from the dataclass field docs and
the alias table.

``python -m ppokit.readme README.md docs/config.md ...`` rewrites, in each file, the text between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ppokit.config import alias_table, markdown_table


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
