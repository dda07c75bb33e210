"""The two-column Markdown table (figure | value) that the flood and soak benches print: one
renderer, so their output (pasted into bench/README.md) keeps one layout."""

from __future__ import annotations

from collections.abc import Iterable


def figure_table(heading: str, rows: Iterable[tuple[str, str]]) -> str:
    """``| heading | value |`` then one ``| name | value |`` line per row."""
    lines = [f"| {heading} | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)
