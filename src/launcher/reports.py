"""comparison.md and comparison.json: the side-by-side table of a comparison run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..files import atomic_write_text


def format_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_comparison(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write comparison.json (everything) and comparison.md (the table, notes and plots)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "comparison.json"
    atomic_write_text(json_path, json.dumps(report, indent=2, sort_keys=True, default=str))
    parts = [f"# Comparison: {report['algorithm']}", "",
             f"Channels: `{report.get('channels')}`, scored on the `{report.get('test_channel')}` "
             f"channel.", "", markdown_table(report["rows"], report["columns"]), ""]
    for note in report.get("notes", []):
        parts.append(f"- {note}")
    if report.get("plots"):
        parts += ["", "## Plots", ""]
        parts += [f"![{name}]({file})" for name, file in sorted(report["plots"].items())]
    md_path = out_dir / "comparison.md"
    atomic_write_text(md_path, "\n".join(parts) + "\n")
    return md_path, json_path
