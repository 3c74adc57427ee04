"""Alerts near the targets of a catalog, in the JVM: `fink-spark xmatch` and the `watchlist`
filter share it.

The sky is cut into HEALPix cells of an order at least twice as wide as the radius (`match_order`):
every position within the radius of a target is then in the target's cell or in one of
its neighbours (tests/transform/test_crossmatch.py; at 0.7 of a cell's width some are
not). cdshealpix gives each target's cell and neighbours once, on the driver; each cell
becomes one row holding its nearby targets as an array. An alert joins the one row of its
own cell (its `_healpix_29` cut to the order), so the join keeps one row per alert, and the
great-circle distance to each target of the array, in Spark SQL, keeps those within the
radius, nearest first. No Python worker sees an alert.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.errors import ConfigError
from fink_spark.transform.sky import HEALPIX, ORDER, SEPARATION, cell_width_arcsec, separation_sql

TARGET_ROW = "row"  # a target's place in its catalog, from 0
_CELL, _NEAR = "_fink_spark_cell", "_fink_spark_targets"
WIDTHS_PER_RADIUS = 2  # the cells' width over the radius: 1.4 misses positions (the tests' search)


def match_order(radius: float) -> int:
    """The deepest HEALPix order whose cells are at least `WIDTHS_PER_RADIUS` radii wide (arcsec)."""
    if not 0 < radius <= cell_width_arcsec(0) / WIDTHS_PER_RADIUS:
        raise ConfigError(f"The radius must be a positive number of arcsec, at most {cell_width_arcsec(0) / WIDTHS_PER_RADIUS:.0f} "
                          f"({cell_width_arcsec(0) / WIDTHS_PER_RADIUS / 3600:.0f} degrees), not {radius}.")
    order = 0
    while order < ORDER and cell_width_arcsec(order + 1) >= WIDTHS_PER_RADIUS * radius:
        order += 1
    return order


class Targets:
    """A catalog of targets, read once on the driver: its rows (Arrow), the columns that
    hold the position (degrees) and, for a watchlist, the target's id."""

    def __init__(self, path: str | Path, ra_column: str = "ra", dec_column: str = "dec", id_column: str | None = None,
                 where: str = "--catalog") -> None:
        self.path = str(path)
        self.table = _read_catalog(Path(path), where)
        names = self.table.column_names
        for flag, column in ((f"{where} ra column", ra_column), (f"{where} dec column", dec_column),
                             (f"{where} id column", id_column)):
            if column is not None and column not in names:
                raise ConfigError(f"{self.path} has no column {column!r} ({flag}); its columns: {', '.join(names)}.")
        self.ra = _positions(self.table, ra_column, self.path, (-np.inf, np.inf)) % 360
        self.dec = _positions(self.table, dec_column, self.path, (-90, 90))
        self.id_column = id_column
        self._cells: dict[tuple[int, int], DataFrame] = {}

    def __len__(self) -> int:
        return self.table.num_rows

    def near_cells(self, spark: SparkSession, order: int) -> DataFrame:
        """One row per cell of `order` near a target: the cell, and its targets near it
        (row, ra, dec and id), made once per session and order."""
        key = (id(spark), order)
        if key not in self._cells:
            self._cells[key] = spark.createDataFrame(self._near_cells(order))
        return self._cells[key]

    def _near_cells(self, order: int) -> pa.Table:
        import astropy.units as u
        from cdshealpix.nested import lonlat_to_healpix, neighbours

        own = lonlat_to_healpix(self.ra * u.deg, self.dec * u.deg, order).astype(np.int64)
        cells = neighbours(own, order).astype(np.int64).ravel()  # each row: 8 neighbours and the cell; -1: none
        rows = np.repeat(np.arange(len(self), dtype=np.int64), 9)
        kept = cells >= 0
        cells, rows = cells[kept], rows[kept]
        by_cell = np.argsort(cells, kind="stable")
        cells, rows = cells[by_cell], rows[by_cell]
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        fields = {TARGET_ROW: pa.array(rows), "ra": pa.array(self.ra[rows]), "dec": pa.array(self.dec[rows])}
        if self.id_column is not None:
            fields["id"] = self.table[self.id_column].combine_chunks().take(pa.array(rows))
        near = pa.ListArray.from_arrays(pa.array(np.r_[starts, len(cells)], pa.int32()),
                                        pa.StructArray.from_arrays(list(fields.values()), names=list(fields)))
        return pa.table({_CELL: pa.array(cells[starts]), _NEAR: near})


def _read_catalog(path: Path, where: str) -> pa.Table:
    if not path.is_file():
        raise ConfigError(f"{where} {path}: no such file; give a .csv (with a header line) or .parquet catalog.")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif path.suffix == ".csv":
            import pyarrow.csv as csv

            table = csv.read_csv(path)
        else:
            raise ConfigError(f"{where} {path}: give a .csv (with a header line) or .parquet catalog.")
    except pa.ArrowInvalid as error:
        raise ConfigError(f"{where} {path} cannot be read: {str(error).splitlines()[0]}") from None
    if table.num_rows == 0:
        raise ConfigError(f"{where} {path} holds no targets.")
    return table


def _positions(table: pa.Table, column: str, source: str, bounds: tuple[float, float]) -> np.ndarray:
    """A position column as float64 degrees: an error names the first row without a number, or out of bounds."""
    try:
        values = pc.cast(table[column], pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ConfigError(f"{source}: column {column!r} must hold numbers (degrees), not {table[column].type}.") from None
    bad = ~np.isfinite(values) | (values < bounds[0]) | (values > bounds[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{source}: target {row + 1} has {column} {table[column][row].as_py()!r}: every target "
                          f"needs a position in degrees"
                          f"{', within [-90, 90]' if bounds[0] == -90 else ''}.")
    return values


def with_matches(alerts: DataFrame, targets: Targets, radius: float, column: str, fields: tuple[str, ...],
                 broadcast: bool) -> DataFrame:
    """Alerts -> the same with `column`: the targets within `radius` arcsec, nearest first;
    null where none is near the alert's cell.

    Parameters
    ----------
    alerts
        Rows with `ra`, `dec` and `_healpix_29`.
    targets
        The catalog.
    radius
        Arcsec.
    column
        The new column's name.
    fields
        The target's fields each match holds, beside `separation_arcsec` (`row`, `id`).
    broadcast
        Send the cells to every task (a watchlist), else let Spark choose the join.
    """
    order = match_order(radius)
    near = targets.near_cells(alerts.sparkSession, order)
    cell = F.shiftright(F.col(HEALPIX), 2 * (ORDER - order))
    joined = alerts.join(F.broadcast(near) if broadcast else near, cell == near[_CELL], "left")
    kept = ", ".join(f"'{name}', t.{name}" for name in fields)
    matches = (f"array_sort(filter(transform({_NEAR}, t -> named_struct('{SEPARATION}', "
               f"{separation_sql('t.ra', 't.dec', 'ra', 'dec')}, {kept})), m -> m.{SEPARATION} <= {radius!r}))")
    return joined.select(*alerts.columns, F.expr(matches).alias(column))


def explode_matches(alerts: DataFrame, column: str) -> DataFrame:
    """One row per alert and target of its `column` of matches, the match's fields as columns."""
    pairs = alerts.select("*", F.explode(column).alias("_match")).drop(column)
    return pairs.select(*[name for name in pairs.columns if name != "_match"], "_match.*")


def catalog_frame(spark: SparkSession, targets: Targets, prefix: str) -> DataFrame:
    """The catalog's columns, each named `prefix` + its name, with the target's row."""
    table = targets.table.rename_columns([prefix + name for name in targets.table.column_names])
    return spark.createDataFrame(table.append_column(TARGET_ROW, pa.array(np.arange(len(targets), dtype=np.int64))))

