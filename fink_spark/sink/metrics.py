"""Metrics Spark gathers while a frame's plan runs (`observe`), read back however the plan ran."""

from __future__ import annotations

import json
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, Row


class PlanMetrics:
    """Metrics gathered while a frame's plan runs (Spark's `observe`), read back after it ran.

    Spark's file sink runs the frame's own plan: its metrics are read from that execution,
    by name. A DataSource V2 write (Iceberg) runs a plan built from the frame, which only
    the session's listener sees: `SessionMetrics` reads them through `Observation`s.
    """

    def observe(self, frame: DataFrame, name: str, *metrics: Column) -> DataFrame:
        return frame.observe(name, *metrics)

    def collected(self, frame: DataFrame) -> dict[str, Any]:
        """Every metric of the plan that ended in `frame`, by observation name."""
        return observed_metrics(frame)


class SessionMetrics(PlanMetrics):
    def __init__(self) -> None:
        self.pending: dict[str, Observation] = {}

    def observe(self, frame: DataFrame, name: str, *metrics: Column) -> DataFrame:
        self.pending[name] = Observation(name)
        return frame.observe(self.pending[name], *metrics)

    def collected(self, frame: DataFrame) -> dict[str, Any]:
        return {name: _plain(observation.get) for name, observation in self.pending.items()}


def _plain(value: Any) -> Any:
    """Rows as dicts, at any depth (as `observed_metrics` gives them)."""
    if isinstance(value, Row):
        return value.asDict(recursive=True)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def observed_metrics(frame: DataFrame) -> dict[str, Any]:
    """The metrics `frame.observe(name, ...)` gathered when the frame's plan last ran, by name."""
    metrics = frame._jdf.queryExecution().observedMetrics()
    names, iterator = [], metrics.keysIterator()
    while iterator.hasNext():
        names.append(iterator.next())
    return {name: json.loads(metrics.get(name).get().json()) for name in names}
