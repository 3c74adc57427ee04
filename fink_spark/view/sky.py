"""Alerts within a radius of a position, read without Spark (or with it, when asked).

The cone's cells come from cdshealpix at an order about as fine as the radius (all the
cells the cone meets), and become ranges of `_healpix_29`: a reader that knows each data
file's min and max of that column (Iceberg's metrics, through pyiceberg) plans only the
files whose range meets the cone. Within them, the great-circle distance decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_spark.errors import ConfigError
from fink_spark.table.committed import read_committed
from fink_spark.table.warehouse import ALERTS
from fink_spark.transform.sky import HEALPIX, ORDER, SEPARATION, cell_width_arcsec
from fink_spark.view.explore import Output

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


NO_HEALPIX = (f"This table has no {HEALPIX} column yet: run fink-spark maintain once, which gives every alert its "
              "position, then search again.")


@dataclass(frozen=True)
class Cone:
    """A position (degrees) and a radius (arcsec)."""

    ra: float
    dec: float
    radius: float

    def __post_init__(self) -> None:
        if not -90 <= self.dec <= 90:
            raise ConfigError(f"--dec must be within [-90, 90] degrees, not {self.dec}.")
        if not 0 < self.radius <= 180 * 3600:
            raise ConfigError(f"--radius must be a positive number of arcsec, at most 648000 (180 degrees), not {self.radius}.")

    @property
    def order(self) -> int:
        """The deepest order whose cells are about as wide as the radius, or wider."""
        order = 0
        while order < ORDER and cell_width_arcsec(order + 1) >= self.radius:
            order += 1
        return order

    def ranges(self) -> list[tuple[int, int]]:
        """[low, high) ranges of `_healpix_29` that hold every position within the cone."""
        import astropy.units as u
        from cdshealpix.nested import cone_search

        cells, depths, _ = cone_search(self.ra % 360 * u.deg, self.dec * u.deg, self.radius * u.arcsec, self.order,
                                       depth_delta=2, flat=False)
        spans = sorted((int(cell) << 2 * (ORDER - int(depth)), (int(cell) + 1) << 2 * (ORDER - int(depth)))
                       for cell, depth in zip(cells, depths))
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def separations(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Great-circle distances (arcsec) to positions in degrees (haversine)."""
        ra1, dec1, ra2, dec2 = map(np.radians, (self.ra, self.dec, ra, dec))
        h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
        return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600


def cone_search(output: Output, cone: Cone, since: datetime | None = None, until: datetime | None = None,
                columns: list[str] | None = None, spark: SparkSession | None = None) -> pa.Table:
    """The alerts of a job's output within the cone, nearest first, with their separation.

    Parameters
    ----------
    output
        An Iceberg warehouse or a Parquet folder.
    cone
        Where, and how far.
    since, until
        Observed in [since, until) (None: no bound).
    columns
        The top-level columns to read (None: all).
    spark
        Read in this session, for large regions (None: pyiceberg or pyarrow).
    """
    ranges = cone.ranges()
    wanted = None if columns is None else list(dict.fromkeys([*columns, "ra", "dec", HEALPIX]))
    if spark is not None:
        table = _spark_rows(spark, output, ranges, since, until, wanted)
    elif output.table is not None:
        table = _iceberg_rows(output.table, ranges, since, until, wanted)
    else:
        table = read_committed(output.path, wanted, rows=lambda rows: _in_ranges(rows, ranges, since, until),
                               files=output.files)
    if table.num_rows == 0 or "ra" not in table.column_names:
        return table.append_column(SEPARATION, pa.array([], pa.float64())) if "ra" in table.column_names else table
    separation = cone.separations(table["ra"].to_numpy(zero_copy_only=False).astype(float),
                                  table["dec"].to_numpy(zero_copy_only=False).astype(float))
    table = table.append_column(SEPARATION, pa.array(separation))
    table = table.filter(pc.less_equal(table[SEPARATION], cone.radius))
    return table.sort_by([(SEPARATION, "ascending")])


def cone(path: str, ra: float, dec: float, radius: float, since: datetime | None = None, until: datetime | None = None,
         columns: list[str] | None = None, spark: SparkSession | None = None, table: str = ALERTS) -> pa.Table:
    """The Python API's cone search: the alerts within the cone, nearest first, as Arrow,
    with `separation_arcsec`.

    Parameters
    ----------
    path
        The job's output: an Iceberg warehouse or a Parquet folder.
    ra, dec
        The cone's centre, degrees.
    radius
        The cone's radius, arcsec.
    since, until
        Observed at or after `since` and before `until` (None: no bound).
    columns
        The top-level columns to read (None: all).
    spark
        Read with Spark in this session (None: pyiceberg or pyarrow, in this process).
    table
        The warehouse's table: `alerts`, or that of a filter that names one.
    """
    return cone_search(Output(path, table), Cone(ra, dec, radius), since, until, columns, spark)


def _spark_rows(spark: SparkSession, output: Output, ranges: list[tuple[int, int]], since: datetime | None,
                until: datetime | None, wanted: list[str] | None) -> pa.Table:
    """The rows within the ranges and times, read by Spark (Iceberg's reader prunes files on
    the OR of ranges as pyiceberg does).

    Parameters
    ----------
    spark
        The session.
    output
        The job's output (its table).
    ranges
        [low, high) ranges of `_healpix_29`.
    since, until
        Observed in [since, until) (None: no bound).
    wanted
        The top-level columns to read (None: all).
    """
    from fink_spark.table.read import read_table

    alerts = read_table(spark, output.path, output.table_name)
    if HEALPIX not in alerts.columns:
        raise ConfigError(NO_HEALPIX)
    condition = " OR ".join(f"({HEALPIX} >= {low} AND {HEALPIX} < {high})" for low, high in ranges)
    for bound, operator in ((since, ">="), (until, "<")):
        if bound is not None:
            condition = f"({condition}) AND obs_time {operator} TIMESTAMP '{bound.isoformat()}'"
    chosen = alerts.where(condition)
    return (chosen if wanted is None else chosen.select(*[name for name in wanted if name in alerts.columns])).toArrow()


def _iceberg_rows(table: Any, ranges: list[tuple[int, int]], since: datetime | None, until: datetime | None,
                  wanted: list[str] | None) -> pa.Table:
    """The rows of the files whose `_healpix_29` range meets the cone's (pyiceberg prunes by
    the files' metrics, then keeps the rows within the ranges)."""
    present = set(table.schema().column_names)
    fields = ("*",) if wanted is None else tuple(name for name in wanted if name in present)
    return table.scan(row_filter=iceberg_filter(table, ranges, since, until), selected_fields=fields).to_arrow()


def iceberg_filter(table: Any, ranges: list[tuple[int, int]], since: datetime | None = None,
                   until: datetime | None = None) -> Any:
    """pyiceberg's row filter for the ranges and times: an OR of ranges, which its planner
    prunes files by."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, Or

    if HEALPIX not in set(table.schema().column_names):
        raise ConfigError(NO_HEALPIX)
    within = [And(GreaterThanOrEqual(HEALPIX, low), LessThan(HEALPIX, high)) for low, high in ranges]
    condition = within[0] if len(within) == 1 else Or(*within)
    if since is not None:
        condition = And(condition, GreaterThanOrEqual("obs_time", since.isoformat()))
    if until is not None:
        condition = And(condition, LessThan("obs_time", until.isoformat()))
    return condition


def _in_ranges(rows: pa.Table, ranges: list[tuple[int, int]], since: datetime | None,
               until: datetime | None) -> pa.ChunkedArray | np.ndarray:
    """The rows of a Parquet file within the ranges and times."""
    if HEALPIX not in rows.column_names:
        return np.zeros(rows.num_rows, dtype=bool)
    cells = rows[HEALPIX]
    mask = pa.array(np.zeros(rows.num_rows, dtype=bool))
    for low, high in ranges:
        mask = pc.or_kleene(mask, pc.and_kleene(pc.greater_equal(cells, low), pc.less(cells, high)))
    for bound, keep in ((since, pc.greater_equal), (until, pc.less)):
        if bound is not None and "obs_time" in rows.column_names:
            mask = pc.and_kleene(mask, keep(rows["obs_time"], pa.scalar(bound, rows["obs_time"].type)))
    return pc.fill_null(mask, False)

