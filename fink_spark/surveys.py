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
class FilterColumns:
    """The SQL behind the filter presets (see `fink_spark.transform.presets`); None where a preset
    does not apply to the survey."""

    ra: str
    dec: str
    magnitude: str | None
    flux: str | None
    reliability: str
    not_sso: str  # may use {radius}, the preset's radius in arcsec
    not_sso_takes_radius: bool
    cross_match: str
    livestream: bool  # Fink's ZTF livestream topics as presets


@dataclass(frozen=True)
class Photometry:
    """Where an alert's light curve lies: the source records (the current one, then an
    array of previous ones), their fields, and optionally forced photometry."""

    current: str
    previous: str
    time: str
    time_offset: float
    band: str
    value: str
    error: str
    unit: str  # axis label
    magnitudes: bool  # brighter is smaller: the axis is inverted
    band_names: dict[int, str] | None = None  # band codes (ZTF's fid)
    upper_limit: str | None = None  # where there is no detection
    source_id: str | None = None  # one point per source id (else per time and band)
    forced: str | None = None
    forced_id: str | None = None


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
    time_alternatives
        Where records of another shape hold that time (fink-mm's flat records: `jd`):
        such records are kept too, with the columns they have.
    required_columns
        Columns a genuine record always has, beside its time: a decoded value where any
        is null did not really decode (corrupt bytes, or bytes written with another schema).
    sanity_checks
        SQL conditions over the decoded `alert` struct that every genuine record meets
        (`{time}`: its time, from whichever time column it has): bytes that happen to
        parse with the wrong schema give ids and times out of range, and fail them.
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
    label
        The survey's name in messages (`ZTF`).
    id_copies
        Every column that repeats the alert id: replicas of an alert change them all.
    filters
        The columns and conditions behind the filter presets.
    photometry
        Where the light curve lies (plots).
    class_partitions
        Class columns the table may also be partitioned by, as fink-client's transfer
        offers them (ZTF: finkclass, tnsclass).
    card_fields
        Fink's fields shown on an alert card; `group.*` expands a record's fields.
    fink_fields
        The fields Fink adds to the survey's alerts (`discover` lists those a schema has).
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
    label: str
    id_copies: tuple[str, ...]
    filters: FilterColumns
    photometry: Photometry
    card_fields: tuple[str, ...]
    fink_fields: tuple[str, ...]
    flux_zero_point: float | None = None
    class_partitions: tuple[str, ...] = ()
    time_alternatives: tuple[str, ...] = ()

    @property
    def time_columns(self) -> tuple[str, ...]:
        """The time's column in an alert, then in records of other shapes."""
        return (self.time_column, *self.time_alternatives)

    @property
    def mjd_expression(self) -> str:
        """SQL for the alert's observation time as MJD."""
        return self.mjd_sql([self.time_column])

    @staticmethod
    def time_sql(time_columns: list[str]) -> str:
        """SQL for the first of these time columns that is set."""
        return time_columns[0] if len(time_columns) == 1 else f"coalesce({', '.join(time_columns)})"

    def mjd_sql(self, time_columns: list[str]) -> str:
        """SQL for the observation time as MJD from the first of these columns that is set."""
        time = self.time_sql(time_columns)
        return f"{time} - {self.time_offset}" if self.time_offset else time

    def mjd_of(self, alert: dict[str, Any]) -> float:
        times = [value_at(alert, column) for column in self.time_columns]
        return next(time for time in times if time is not None) - self.time_offset

    def object_of(self, alert: dict[str, Any]) -> Any:
        return value_at(alert, self.object_column)

    def magnitude_of(self, alert: dict[str, Any]) -> float | None:
        value = value_at(alert, self.brightness_column)
        if value is None or self.flux_zero_point is None:
            return value
        return self.flux_zero_point - 2.5 * math.log10(value) if value > 0 else None

    def card_values(self, alert: dict[str, Any]) -> list[tuple[str, Any]]:
        """(name, value) of the card's fields the alert has."""
        values = []
        for path in self.card_fields:
            if path.endswith(".*"):
                group = path[:-2]
                values += [(f"{group}.{name}", value) for name, value in (value_at(alert, group) or {}).items()]
            elif path.split(".")[0] in alert:
                values.append((path, value_at(alert, path)))
        return values[:16]

    def describe(self, alert: dict[str, Any]) -> str:
        """Ids, coordinates and time of an alert, for titles."""
        ra, dec = value_at(alert, self.filters.ra), value_at(alert, self.filters.dec)
        return (f"{self.object_column.split('.')[-1]} {self.object_of(alert)}  {self.id_column} {alert[self.id_column]}"
                f"  ra {ra:.5f} dec {dec:+.5f}  MJD {self.mjd_of(alert):.5f}")

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
    time_alternatives=("jd",),  # fink-mm's flat records (objectId, candid, jd, GCN fields)
    time_offset=JD_MINUS_MJD,
    required_columns=("candid", "objectId"),
    sanity_checks=(
        "alert.candid > 0",
        "alert.objectId RLIKE '^ZTF[0-9]{2}[a-z]{7}$'",
        "{time} BETWEEN 2450000 AND 2500000",
    ),
    consistency_checks=(("alert.candidate IS NULL OR alert.candidate.candid = alert.candid",
                         "candidate.candid differs from candid"),),
    console_columns=(
        ConsoleColumn("timestamp", "candidate.jd", mjd_offset=JD_MINUS_MJD),
        ConsoleColumn("topic", "topic"),
        ConsoleColumn("objectId", "objectId"),
        ConsoleColumn("cdsxmatch", "cdsxmatch"),
        ConsoleColumn("rf_snia_vs_nonia", "rf_snia_vs_nonia", digits=3),
    ),
    version_schema_pattern="distribution_schema_fink_ztf_{version}.avsc",
    class_column="finkclass",
    class_partitions=("finkclass", "tnsclass"),
    brightness_column="candidate.magpsf",
    label="ZTF",
    id_copies=("candid", "candidate.candid"),
    filters=FilterColumns(
        ra="candidate.ra",
        dec="candidate.dec",
        magnitude="candidate.magpsf",
        flux=None,
        reliability="coalesce(candidate.drb, candidate.rb)",
        not_sso="(candidate.ssdistnr IS NULL OR candidate.ssdistnr < 0 OR candidate.ssdistnr > {radius})"
        " AND coalesce(roid, 0) != 3",
        not_sso_takes_radius=True,
        cross_match="cdsxmatch",
        livestream=True,
    ),
    photometry=Photometry(
        current="candidate", previous="prv_candidates", time="jd", time_offset=JD_MINUS_MJD,
        band="fid", band_names={1: "g", 2: "r", 3: "i"}, value="magpsf", error="sigmapsf",
        unit="magnitude (PSF)", magnitudes=True, upper_limit="diffmaglim",
    ),
    card_fields=("finkclass", "cdsxmatch", "rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_kn_vs_nonkn",
                 "mulens", "roid", "tns", "gaiaClass", "anomaly_score", "DR3Name", "candidate.ndethist"),
    fink_fields=("cdsxmatch", "roid", "rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "mulens",
                 "rf_kn_vs_nonkn", "tracklet", "tns", "gaiaClass", "anomaly_score", "lc_features_g", "lc_features_r",
                 "mangrove", "finkclass", "tnsclass", "fink_broker_version", "fink_science_version"),
)

LSST = Survey(
    name="lsst",
    id_column="diaSourceId",
    object_column="diaSource.diaObjectId",
    time_column="diaSource.midpointMjdTai",
    time_offset=0.0,
    required_columns=("diaSourceId",),
    sanity_checks=(
        "alert.diaSourceId > 0",
        "{time} BETWEEN 50000 AND 80000",
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
    label="LSST",
    id_copies=("diaSourceId", "diaSource.diaSourceId"),
    filters=FilterColumns(
        ra="diaSource.ra",
        dec="diaSource.dec",
        magnitude=None,
        flux="diaSource.psfFlux",
        reliability="diaSource.reliability",
        not_sso="coalesce(diaSource.ssObjectId, 0) = 0 AND ssSource.ssObjectId IS NULL",
        not_sso_takes_radius=False,
        cross_match="xm.simbad_otype",
        livestream=False,
    ),
    photometry=Photometry(
        current="diaSource", previous="prvDiaSources", time="midpointMjdTai", time_offset=0.0,
        band="band", value="psfFlux", error="psfFluxErr", unit="PSF flux (nJy)", magnitudes=False,
        source_id="diaSourceId", forced="prvDiaForcedSources", forced_id="diaForcedSourceId",
    ),
    card_fields=("pred.*", "clf.*", "xm.*"),
    fink_fields=("clf", "xm", "pred", "misc", "lc_features", "fink_broker_version", "fink_science_version"),
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
