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


def offset_position(ra: np.ndarray, dec: np.ndarray, distance: float, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions (degrees) `distance` degrees away along position angles `angle` (radians)."""
    ra1, dec1, r = np.radians(ra), np.radians(dec), np.radians(distance)
    dec2 = np.arcsin(np.sin(dec1) * np.cos(r) + np.cos(dec1) * np.sin(r) * np.cos(angle))
    ra2 = ra1 + np.arctan2(np.sin(angle) * np.sin(r) * np.cos(dec1), np.cos(r) - np.sin(dec1) * np.sin(dec2))
    return np.degrees(ra2) % 360, np.degrees(dec2)


@pytest.mark.parametrize("order", [0, 2, 9, 16, 23])
def test_a_position_within_the_radius_is_in_the_targets_cell_or_a_neighbour(order: int) -> None:
    """What the cross-match relies on: at the largest radius `match_order` gives an order for,
    every position that far from a target, in any direction, is in the target's cell or one
    of its neighbours: over the sky, near the poles and where the caps meet the belt."""
    from cdshealpix.nested import neighbours

    from fink_spark.transform.crossmatch import WIDTHS_PER_RADIUS, match_order
    from fink_spark.transform.sky import cell_width_arcsec

    radius = cell_width_arcsec(order) / WIDTHS_PER_RADIUS
    assert match_order(radius) == order and (order == 0 or match_order(radius * 1.01) == order - 1)
    rng = np.random.default_rng(order)
    count = 40_000
    edge = np.degrees(TRANSITION_LATITUDE)
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, count))), rng.uniform(85, 90, count),
                          rng.uniform(-90, -85, count), edge + rng.uniform(-1, 1, count)])
    ra = rng.uniform(0, 360, len(dec))
    near_ra, near_dec = offset_position(ra, dec, radius / 3600, rng.uniform(0, 2 * np.pi, len(dec)))
    cells = lonlat_to_healpix(ra * u.deg, dec * u.deg, order).astype(np.int64)
    found = lonlat_to_healpix(near_ra * u.deg, near_dec * u.deg, order).astype(np.int64)
    around = neighbours(cells, order).astype(np.int64)  # the cell itself is the fifth
    assert (around == found[:, None]).any(axis=1).all()
