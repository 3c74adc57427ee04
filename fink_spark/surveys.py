"""What differs between surveys, in one registry: ids, observation time, console columns.

Jobs and library functions look a survey up here instead of branching on its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fink_spark.paths import SCHEMAS_DIR

JD_MINUS_MJD = 2400000.5


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
    mjd_expression
        SQL expression giving the alert's observation time as MJD: it decides the
        night (year/month/day partitions) and the console's time column.
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
        (label, SQL expression, column it reads) triples, shown one line per alert in
        the terminal; blank where the table's schema lacks the column.
    version_schema_pattern
        How a version-string key (older streams) names its bundled schema file.
    class_column
        The alert's main Fink classification (summaries).
    magnitude_expression
        SQL for the alert's brightness as a magnitude (summaries).
    """

    name: str
    id_column: str
    object_column: str
    mjd_expression: str
    required_columns: tuple[str, ...]
    sanity_checks: tuple[str, ...]
    consistency_checks: tuple[tuple[str, str], ...]
    console_columns: tuple[tuple[str, str, str], ...]
    version_schema_pattern: str
    class_column: str
    magnitude_expression: str

    @property
    def schema_dir(self) -> Path:
        return SCHEMAS_DIR / self.name

    @property
    def latest_schema(self) -> Path:
        """The newest bundled schema (named by the folder's `latest` marker)."""
        marker = self.schema_dir / "latest"
        return self.schema_dir / marker.read_text().strip()


def _time_of(mjd: str) -> str:
    """SQL for an MJD as a UTC timestamp string, to the second."""
    return (
        "date_format(timestamp_seconds(CAST(round(("
        + mjd
        + " - 40587.0) * 86400.0) AS BIGINT)), 'yyyy-MM-dd HH:mm:ss')"
    )


ZTF = Survey(
    name="ztf",
    id_column="candid",
    object_column="objectId",
    mjd_expression=f"candidate.jd - {JD_MINUS_MJD}",
    required_columns=("candid", "objectId", "candidate.jd"),
    sanity_checks=(
        "alert.candid > 0",
        "alert.objectId RLIKE '^ZTF[0-9]{2}[a-z]{7}$'",
        "alert.candidate.jd BETWEEN 2450000 AND 2500000",
    ),
    consistency_checks=(("alert.candidate.candid = alert.candid", "candidate.candid differs from candid"),),
    console_columns=(
        ("timestamp", _time_of(f"candidate.jd - {JD_MINUS_MJD}"), "candidate.jd"),
        ("topic", "topic", "topic"),
        ("objectId", "objectId", "objectId"),
        ("cdsxmatch", "cdsxmatch", "cdsxmatch"),
        ("rf_snia_vs_nonia", "round(rf_snia_vs_nonia, 3)", "rf_snia_vs_nonia"),
    ),
    version_schema_pattern="distribution_schema_fink_ztf_{version}.avsc",
    class_column="finkclass",
    magnitude_expression="candidate.magpsf",
)

LSST = Survey(
    name="lsst",
    id_column="diaSourceId",
    object_column="diaSource.diaObjectId",
    mjd_expression="diaSource.midpointMjdTai",
    required_columns=("diaSourceId", "diaSource.midpointMjdTai"),
    sanity_checks=(
        "alert.diaSourceId > 0",
        "alert.diaSource.midpointMjdTai BETWEEN 50000 AND 80000",
    ),
    consistency_checks=(("alert.diaSource.diaSourceId = alert.diaSourceId", "diaSource.diaSourceId differs from diaSourceId"),),
    console_columns=(
        ("timestamp", _time_of("diaSource.midpointMjdTai"), "diaSource.midpointMjdTai"),
        ("topic", "topic", "topic"),
        ("diaSourceId", "diaSourceId", "diaSourceId"),
        ("diaObjectId", "diaSource.diaObjectId", "diaSource.diaObjectId"),
        ("ra", "round(diaSource.ra, 6)", "diaSource.ra"),
        ("dec", "round(diaSource.dec, 6)", "diaSource.dec"),
        ("band", "diaSource.band", "diaSource.band"),
        ("midpointMjdTai", "round(diaSource.midpointMjdTai, 6)", "diaSource.midpointMjdTai"),
        ("main_label", "pred.main_label_classifier", "pred.main_label_classifier"),
    ),
    version_schema_pattern="fink_lsst_{version}.avsc",
    class_column="pred.main_label_classifier",
    # AB magnitude of a flux in nJy
    magnitude_expression="CASE WHEN diaSource.psfFlux > 0 THEN -2.5 * log10(diaSource.psfFlux) + 31.4 END",
)

SURVEYS: dict[str, Survey] = {survey.name: survey for survey in (ZTF, LSST)}


def get_survey(name: str) -> Survey:
    try:
        return SURVEYS[name]
    except KeyError:
        raise ValueError(
            f"Unknown survey {name!r}: choose one of {', '.join(sorted(SURVEYS))}."
        ) from None
