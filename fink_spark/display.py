"""Alerts as aligned text lines in the terminal, as Fink's tutorial shows them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Summary:
    """What a whole output holds."""

    total: int
    per_topic: dict[str, int]
    per_night: dict[str, int]
    per_class: dict[str, int]
    magnitudes: list[float]

    def text(self) -> str:
        def block(title: str, counts: dict[str, int]) -> list[str]:
            width = max([len(k) for k in counts] + [1])
            return [title] + [f"  {key.ljust(width)}  {value}" for key, value in counts.items()]

        lines = [f"{self.total} alerts"]
        lines += block("per topic:", self.per_topic) + block("per night:", self.per_night)
        lines += block("per Fink class:", self.per_class)
        if self.magnitudes:
            lines.append(f"magnitude: min {min(self.magnitudes):.2f}, median {statistics.median(self.magnitudes):.2f}, "
                         f"max {max(self.magnitudes):.2f}")
        return "\n".join(lines)
