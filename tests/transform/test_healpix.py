"""Where an alert is on the sky: `ra`, `dec` and `_healpix_29` on every row, computed in the
JVM and checked against cdshealpix (the library HATS and LSDB compute their index with)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from cdshealpix.nested import cone_search, healpix_to_lonlat, lonlat_to_healpix
from conftest import kept_in_memory
from pyspark.sql import SparkSession

from fink_spark.surveys import LSST, ZTF
from fink_spark.transform.sky import TRANSITION_LATITUDE, healpix_sql

SAMPLES = {"ztf": ["ztf-2026", "ztf-0p2", "ztf-raw-3.3"], "lsst": ["lsst-2026", "lsst-rubin-9.0"]}


def cdshealpix_29(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return lonlat_to_healpix(np.remainder(ra, 360) * u.deg, dec * u.deg, 29).astype(np.int64)


def healpix_29(spark: SparkSession, ra: list[float | None], dec: list[float | None]) -> list[int | None]:
    frame = spark.createDataFrame(pd.DataFrame({"n": range(len(ra)), "ra": ra, "dec": dec}))
    return [row.h for row in frame.selectExpr("n", f"{healpix_sql('ra', 'dec')} AS h").orderBy("n").collect()]


@pytest.mark.parametrize("survey", [ZTF, LSST], ids=["ztf", "lsst"])
def test_every_bundled_alert_has_its_position_and_cdshealpix_cell(spark: SparkSession, survey) -> None:  # noqa: ANN001
    alerts = kept_in_memory(spark, SAMPLES[survey.name], survey)
    rows = alerts.selectExpr(f"{survey.filters.ra} AS want_ra", f"{survey.filters.dec} AS want_dec",
                             "ra", "dec", "_healpix_29").toPandas()
    assert len(rows) >= 5 and dict(alerts.dtypes)["ra"] == "double" and dict(alerts.dtypes)["_healpix_29"] == "bigint"
    assert rows["ra"].tolist() == rows["want_ra"].astype(float).tolist()
    assert rows["dec"].tolist() == rows["want_dec"].astype(float).tolist()
    assert rows["_healpix_29"].tolist() == cdshealpix_29(rows["ra"].to_numpy(), rows["dec"].to_numpy()).tolist()


def test_healpix_29_is_cdshealpix_at_the_poles_across_ra_0_and_over_the_whole_sky(spark: SparkSession) -> None:
    rng = np.random.default_rng(29)
    ra = list(rng.uniform(0, 360, 20000))
    dec = list(np.degrees(np.arcsin(rng.uniform(-1, 1, 20000))))
    edge = np.degrees(TRANSITION_LATITUDE)  # where the polar caps meet the equatorial belt
    for lon in (0.0, 1e-12, 45.0, 90.0, 180.0, 270.0, 359.999999999, 360.0):
        for lat in (90.0, -90.0, 89.9999999, -89.9999999, 0.0, 10.0, edge + 1e-9, edge - 1e-9, -edge + 1e-9, -edge - 1e-9):
            ra.append(lon)
            dec.append(lat)
    assert healpix_29(spark, ra, dec) == cdshealpix_29(np.array(ra), np.array(dec)).tolist()
    # ra 360 is ra 0; without a position, no cell
    assert healpix_29(spark, [0.0, 360.0, None, 10.0, float("nan")], [5.0, 5.0, 5.0, None, 5.0])[1:] == [
        healpix_29(spark, [0.0], [5.0])[0], None, None, None]


def test_on_cell_edges_the_cell_is_cdshealpix_or_a_neighbour_touching_the_point(spark: SparkSession) -> None:
    """The corners and the middles of the edges of order-8 cells, which are edges at order
    29 too. The JVM's sine and Rust's may differ in the last bit, which can put a point
    exactly on an edge in the cell across it: a cell that touches the point all the same,
    which is all that a cone search needs."""
    cells = np.arange(0, 12 * 4**8, 499, dtype=np.uint64)
    ra, dec = [], []
    for dx, dy in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5)):
        lon, lat = healpix_to_lonlat(cells, 8, dx=dx, dy=dy)
        ra += list(lon.to_value(u.deg))
        dec += list(np.clip(lat.to_value(u.deg), -90, 90))
    got = healpix_29(spark, ra, dec)
    want = cdshealpix_29(np.array(ra), np.array(dec))
    differ = [n for n, (ours, theirs) in enumerate(zip(got, want)) if ours != theirs]
    assert len(differ) < len(ra) / 5
    for n in differ:
        touching, _, _ = cone_search(np.remainder(ra[n], 360) * u.deg, dec[n] * u.deg, 1e-6 * u.arcsec, 29, depth_delta=0)
        assert got[n] in set(touching.astype(np.int64)), f"ra {ra[n]!r} dec {dec[n]!r}: cell {got[n]}, not beside {want[n]}"
