"""What differs between surveys, in one registry: ids, observation time, console columns.

Jobs and library functions look a survey up here instead of branching on its name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fink_spark.paths import SCHEMAS_DIR

JD_MINUS_MJD = 2400000.5
MJD_ZERO = datetime(1858, 11, 17)


def value_at(row: dict[str, Any], path: str) -> Any:
    """The value of a dotted column in an alert as a dict (None where a level is missing)."""
    value: Any = row
    for name in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


@dataclass(frozen=True)
class ConsoleColumn:
    """One column of the terminal view: a label, the (dotted) column it shows, and how.

    `digits` rounds a number; `mjd_offset` shows `value - mjd_offset`, an MJD, as a UTC
    time to the second. A column the table lacks shows blank.
    """

    label: str
    column: str
    digits: int | None = None
    mjd_offset: float | None = None

    def cell(self, value: Any) -> str:
        if value is None:
            return ""
        if self.mjd_offset is not None:
            seconds = round((value - self.mjd_offset) * 86400.0)
            return (MJD_ZERO + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
        if self.digits is not None:
            return str(round(value, self.digits))
        return str(value)


@dataclass(frozen=True)
class Survey:
    """One survey's alert layout.

    Parameters
    ----------
    name
        Short name used in configuration files (`ztf`, `lsst`).
    id_column
        The alert's unique id (one row per alert and topic).
    object_column
        The id of the astronomical object the alert belongs to.
    time_column, time_offset
        The alert's observation time is `time_column - time_offset`, an MJD: it
        decides the night (year/month/day partitions) and the console's time column.
    required_columns
        Columns a genuine alert always has: a decoded value where any is null did not
        really decode (corrupt bytes, or bytes written with another schema).
    sanity_checks
        SQL conditions over the decoded `alert` struct that every genuine alert meets:
        bytes that happen to parse with the wrong schema give ids and times out of
        range, and fail them.
    consistency_checks
        (SQL condition, reason) pairs for alerts that decode but contradict themselves
        (an id given twice with two values): quarantined with that reason.
    console_columns
        The columns shown one line per alert in the terminal.
    version_schema_pattern
        How a version-string key (older streams) names its bundled schema file.
    class_column
        The alert's main Fink classification (summaries).
    brightness_column, flux_zero_point
        The alert's brightness (summaries): a magnitude, or with a zero point a flux
        turned into the magnitude `zero point - 2.5 log10(flux)`.
    """

    name: str
    id_column: str
    object_column: str
    time_column: str
    time_offset: float
    required_columns: tuple[str, ...]
    sanity_checks: tuple[str, ...]
    consistency_checks: tuple[tuple[str, str], ...]
    console_columns: tuple[ConsoleColumn, ...]
    version_schema_pattern: str
    class_column: str
    brightness_column: str
    flux_zero_point: float | None = None

    @property
    def mjd_expression(self) -> str:
        """SQL for the alert's observation time as MJD."""
        return f"{self.time_column} - {self.time_offset}" if self.time_offset else self.time_column

    def mjd_of(self, alert: dict[str, Any]) -> float:
        return value_at(alert, self.time_column) - self.time_offset

    def object_of(self, alert: dict[str, Any]) -> Any:
        return value_at(alert, self.object_column)

    def magnitude_of(self, alert: dict[str, Any]) -> float | None:
        value = value_at(alert, self.brightness_column)
        if value is None or self.flux_zero_point is None:
            return value
        return self.flux_zero_point - 2.5 * math.log10(value) if value > 0 else None

    def console_cells(self, values: dict[str, Any]) -> list[str]:
        """One alert's console line, from its raw values keyed by label."""
        return [column.cell(values.get(column.label)) for column in self.console_columns]

    @property
    def schema_dir(self) -> Path:
        return SCHEMAS_DIR / self.name

    @property
    def latest_schema(self) -> Path:
        """The newest bundled schema (named by the folder's `latest` marker)."""
        marker = self.schema_dir / "latest"
        return self.schema_dir / marker.read_text().strip()


ZTF = Survey(
    name="ztf",
    id_column="candid",
    object_column="objectId",
    time_column="candidate.jd",
    time_offset=JD_MINUS_MJD,
    required_columns=("candid", "objectId", "candidate.jd"),
    sanity_checks=(
        "alert.candid > 0",
        "alert.objectId RLIKE '^ZTF[0-9]{2}[a-z]{7}$'",
        "alert.candidate.jd BETWEEN 2450000 AND 2500000",
    ),
    consistency_checks=(("alert.candidate.candid = alert.candid", "candidate.candid differs from candid"),),
    console_columns=(
        ConsoleColumn("timestamp", "candidate.jd", mjd_offset=JD_MINUS_MJD),
        ConsoleColumn("topic", "topic"),
        ConsoleColumn("objectId", "objectId"),
        ConsoleColumn("cdsxmatch", "cdsxmatch"),
        ConsoleColumn("rf_snia_vs_nonia", "rf_snia_vs_nonia", digits=3),
    ),
    version_schema_pattern="distribution_schema_fink_ztf_{version}.avsc",
    class_column="finkclass",
    brightness_column="candidate.magpsf",
)

LSST = Survey(
    name="lsst",
    id_column="diaSourceId",
    object_column="diaSource.diaObjectId",
    time_column="diaSource.midpointMjdTai",
    time_offset=0.0,
    required_columns=("diaSourceId", "diaSource.midpointMjdTai"),
    sanity_checks=(
        "alert.diaSourceId > 0",
        "alert.diaSource.midpointMjdTai BETWEEN 50000 AND 80000",
    ),
    consistency_checks=(("alert.diaSource.diaSourceId = alert.diaSourceId", "diaSource.diaSourceId differs from diaSourceId"),),
    console_columns=(
        ConsoleColumn("timestamp", "diaSource.midpointMjdTai", mjd_offset=0.0),
        ConsoleColumn("topic", "topic"),
        ConsoleColumn("diaSourceId", "diaSourceId"),
        ConsoleColumn("diaObjectId", "diaSource.diaObjectId"),
        ConsoleColumn("ra", "diaSource.ra", digits=6),
        ConsoleColumn("dec", "diaSource.dec", digits=6),
        ConsoleColumn("band", "diaSource.band"),
        ConsoleColumn("midpointMjdTai", "diaSource.midpointMjdTai", digits=6),
        ConsoleColumn("main_label", "pred.main_label_classifier"),
    ),
    version_schema_pattern="fink_lsst_{version}.avsc",
    class_column="pred.main_label_classifier",
    brightness_column="diaSource.psfFlux",
    flux_zero_point=31.4,  # AB magnitude of a flux in nJy
)

SURVEYS: dict[str, Survey] = {survey.name: survey for survey in (ZTF, LSST)}


def get_survey(name: str) -> Survey:
    try:
        return SURVEYS[name]
    except KeyError:
        raise ValueError(
            f"Unknown survey {name!r}: choose one of {', '.join(sorted(SURVEYS))}."
        ) from None


def survey_with_columns(names: Sequence[str]) -> Survey | None:
    """The survey whose alert id is among a table's columns."""
    return next((survey for survey in SURVEYS.values() if survey.id_column in names), None)
