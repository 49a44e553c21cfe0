"""Regenerate the config reference tables in README.md from the dataclass field docs.

``python -m ppokit.readme README.md`` rewrites the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ppokit.config import markdown_table


def tables() -> dict[str, str]:
    """Marker name -> generated Markdown. The LLM tables are added when the llm extra is present."""
    from ppokit.rl.config import PPOConfig

    out = {"config-table": markdown_table(PPOConfig)}
    try:
        from ppokit.llm.config import GRPOConfig

        out["grpo-config-table"] = markdown_table(GRPOConfig)
        from ppokit.llm.rlhf_config import RLHFPPOConfig

        out["rlhf-ppo-config-table"] = markdown_table(RLHFPPOConfig)
    except ImportError:
        pass
    return out


def render(text: str) -> str:
    """``text`` with every known marker block replaced by its generated table."""
    for name, table in tables().items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))
