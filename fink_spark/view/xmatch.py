"""Every (target, alert) pair within a radius: a catalog cross-matched with a job's output,
in Spark (`fink_spark.transform.crossmatch`: a join on HEALPix cells, then the exact
great-circle distance). A table written before alerts had a position gets it on the fly."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from fink_spark.errors import ConfigError
from fink_spark.surveys import Survey, survey_with_columns
from fink_spark.table.warehouse import ALERTS
from fink_spark.transform.crossmatch import TARGET_ROW, Targets, catalog_frame, explode_matches, with_matches
from fink_spark.transform.decode import has_column
from fink_spark.transform.sky import HEALPIX, SEPARATION, with_position

TARGET_PREFIX = "target_"  # the catalog's columns, beside the alert's


def xmatch_frame(alerts: DataFrame, targets: Targets, radius: float, columns: list[str]) -> DataFrame:
    """Alerts -> one row per target and alert within `radius` arcsec: the target's columns
    (`target_` + its name), the alert's `columns` (top-level or dotted), `separation_arcsec`;
    by target, nearest first."""
    if HEALPIX not in alerts.columns:
        schema = alerts.schema
        alerts = alerts.transform(with_position(survey_of(alerts), lambda name: has_column(schema, name)))
    shown = {name: name.replace(".", "_") for name in dict.fromkeys([*columns, "ra", "dec"])}
    chosen = alerts.selectExpr(*[f"{name} AS `{alias}`" for name, alias in shown.items()], HEALPIX)
    pairs = explode_matches(with_matches(chosen, targets, radius, "_matches", (TARGET_ROW,), broadcast=False), "_matches")
    catalog = catalog_frame(alerts.sparkSession, targets, TARGET_PREFIX)
    matched = catalog.join(pairs, TARGET_ROW).orderBy(TARGET_ROW, SEPARATION)
    return matched.select(*catalog.columns, *shown.values(), SEPARATION).drop(TARGET_ROW)


def xmatch(path: str, catalog: str | Path, radius: float, ra_column: str = "ra", dec_column: str = "dec",
           columns: list[str] | None = None, spark: SparkSession | None = None, table: str = ALERTS) -> pa.Table:
    """The Python API's cross-match: every (target, alert) pair within `radius` arcsec, as Arrow.

    Parameters
    ----------
    path
        The job's output: an Iceberg warehouse or a Parquet folder.
    catalog
        The targets: a .csv (with a header line) or .parquet file.
    radius
        Arcsec.
    ra_column, dec_column
        The catalog's columns of the targets' positions, degrees.
    columns
        The alert's columns to give (None: its ids, position, time and topic).
    spark
        The session to run in (None: the active one, else a local one, stopped after).
    table
        The warehouse's table: `alerts`, or that of a filter that names one.
    """
    from fink_spark.config.session import local_session
    from fink_spark.table.read import read_table

    targets = Targets(catalog, ra_column, dec_column)
    session = spark or SparkSession.getActiveSession()
    own = session is None
    session = session or local_session("fink-spark-xmatch", "local[*]")
    try:
        alerts = read_table(session, path, table)
        return xmatch_frame(alerts, targets, radius, columns or alert_columns(alerts)).toArrow()
    finally:
        if own:
            session.stop()


def alert_columns(alerts: DataFrame) -> list[str]:
    """The alert columns a cross-match gives by default: ids, time, topic."""
    survey = survey_of(alerts)
    wanted = [survey.id_column, survey.object_column, "obs_time", "topic", "topics"]
    return [name for name in wanted if has_column(alerts.schema, name)]


def survey_of(alerts: DataFrame) -> Survey:
    survey = survey_with_columns(alerts.columns)
    if survey is None:
        raise ConfigError(f"These rows are not fink-spark alerts: they have no alert id column ({alerts.columns[:5]}...).")
    return survey
