"""Alerts as aligned text lines in the terminal, as Fink's tutorial shows them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_table(labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A header line and one line per row, columns aligned and separated by ' | '."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(label), *[len(row[i]) for row in cells]]) for i, label in enumerate(labels)]
    lines = [" | ".join(label.ljust(width) for label, width in zip(labels, widths)).rstrip()]
    lines += [" | ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    return lines


def batch_header(batch_id: int, alerts: int, quarantined: int, shown: int, rejected: int = 0) -> str:
    """E.g. '--- batch 3: 12 alerts, 0 quarantined ---' (with filters: ', 5 rejected by filters')."""
    more = f", showing {shown}" if shown < alerts else ""
    filtered = f", {rejected} rejected by filters" if rejected else ""
    return f"--- batch {batch_id}: {alerts} alert{'s' if alerts != 1 else ''}{more}{filtered}, {quarantined} quarantined ---"


def format_value(value: Any) -> str:
    """A field's value in a few characters: 4 significant digits, a dash for null."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "—" if value is None else str(value)
