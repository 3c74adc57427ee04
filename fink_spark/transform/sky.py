"""Where an alert is on the sky: top-level `ra`, `dec` and `_healpix_29`, in the JVM.

`_healpix_29` is the HEALPix NESTED index of the position at order 29, as HATS and LSDB
define their spatial index column: Spark's readers, pyiceberg, polars and DuckDB prune
files on its min/max, and the cells of a cone are ranges of it at any coarser order.

The index is computed with Spark SQL expressions (Górski et al. 2005, ApJ 622, 759:
the equatorial belt |sin dec| <= 2/3 and the polar caps), so that no Python worker sees
a row. Near the poles, 1 - |sin dec| is taken as cos² dec / (1 + |sin dec|), which keeps
the precision that order 29 (cells of 0.4 mas) needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pyspark.sql import DataFrame

from fink_spark.surveys import Survey

ORDER = 29
HEALPIX = "_healpix_29"  # the column's name, as HATS and LSDB name theirs
POSITION_COLUMNS = ("ra", "dec", HEALPIX)
SEPARATION = "separation_arcsec"  # a great-circle distance's column
TRANSITION_LATITUDE = math.asin(2 / 3)  # where the polar caps meet the equatorial belt
_STEP = "_healpix_step"  # the lambdas' variable: the steps' values so far


def cell_width_arcsec(order: int) -> float:
    """The mean width of a HEALPix cell at `order` (the square root of its area)."""
    return math.degrees(math.sqrt(4 * math.pi / 12)) * 3600 / (1 << order)


def separation_sql(ra1: str, dec1: str, ra2: str, dec2: str) -> str:
    """Spark SQL of the great-circle distance (arcsec) between two positions in degrees
    (haversine: exact near the poles and across ra = 0/360)."""
    return (f"degrees(2 * asin(sqrt(least(1D, pow(sin(radians({dec2} - {dec1}) / 2), 2) + cos(radians({dec1})) "
            f"* cos(radians({dec2})) * pow(sin(radians({ra2} - {ra1}) / 2), 2))))) * 3600D")


def _number(value: float) -> str:
    """A double as Spark SQL reads it back exactly."""
    return f"{value!r}D"


def _spread_bits(value: str) -> str:
    """SQL moving a number's bits 0, 1, 2, ... to bits 0, 2, 4, ..."""
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F),
                        (2, 0x3333333333333333), (1, 0x5555555555555555)):
        value = f"((shiftleft({value}, {shift}) | {value}) & {mask}L)"
    return value


def healpix_sql(ra: str, dec: str, order: int = ORDER) -> str:
    """One Spark SQL expression for the HEALPix NESTED index (bigint) at `order` of the
    positions `ra`, `dec` (SQL, degrees); null where either is null or not a number.

    The cell is found as cdshealpix finds it, step by step: the longitude's eighth of the
    sky and the place in it; the position projected into its base cell, across and up (the
    Collignon projection in the polar caps, the cylindrical equal-area one in the belt); the
    cell's coordinates in the base cell, the projected ones scaled by nside / 2 and cut to
    whole numbers; their bits interleaved. Each step's values are a struct that the next
    step's lambda reads (`transform` over a one-element array), so that each is computed
    once, in one projection: Spark compiles no whole stage for an alert's hundreds of
    fields, and each projection more would copy every row (about 10% of a ZTF micro-batch
    with one a step). At a point exactly on a cell's edge, the JVM's sine may differ from
    Rust's in the last bit, and the cell then be the neighbour across that edge
    (tests/transform/test_healpix.py).
    """
    nside = 1 << order
    lat, x, y, quarter, across, up, d0h, i, j = (f"{_STEP}.{key}" for key in "lat x y q l h d0h i j".split())
    eighth = f"{_STEP}.e"
    north, south = f"{lat} > {_number(TRANSITION_LATITUDE)}", f"{lat} < {_number(-TRANSITION_LATITUDE)}"
    odd = f"(CAST({eighth} AS INT) | 1)"
    q01, q12 = f"IF({x} > {y}, 1, 0)", f"IF({x} >= -{y}, 1, 0)"
    q013 = f"({q01} + 1 - {q12})"
    north_s = f"{_number(math.sqrt(6))} * cos(0.5D * {lat} + {_number(math.pi / 4)})"
    south_s = f"{_number(math.sqrt(6))} * cos(0.5D * {lat} - {_number(math.pi / 4)})"

    def cell(value: str) -> str:  # whole cells from the base cell's corner, within [0, nside - 1]
        return f"CAST(least(greatest(floor(({value}) * {_number(float(nside // 2))}), 0), {nside - 1}) AS BIGINT)"

    steps = [
        {"e": f"IF(isnan(CAST({ra} AS DOUBLE)) OR isnan(CAST({dec} AS DOUBLE)), NULL, "
              f"radians(pmod(CAST({ra} AS DOUBLE), 360D)) / {_number(math.pi / 4)})",
         "lat": f"radians(CAST({dec} AS DOUBLE))"},
        {"x": f"{eighth} - {odd}", "q": f"shiftright({odd} & 7, 1)", "y": f"sin({lat}) / {_number(2 / 3)}"},
        {"l": f"CASE WHEN {north} THEN {x} * {north_s} WHEN {south} THEN {x} * {south_s} ELSE {x} - ({q01} + {q12} - 1) END",
         "h": f"CASE WHEN {north} THEN 2D - {north_s} WHEN {south} THEN {south_s} ELSE {y} + {q013} END",
         "d0h": f"CASE WHEN {north} THEN {quarter} WHEN {south} THEN {quarter} + 8 "
                f"ELSE shiftleft({q013}, 2) + (({quarter} + ({q01} & {q12})) & 3) END"},
        {"i": cell(f"{up} + {across}"), "j": cell(f"{up} - {across}")},
    ]
    known: list[str] = []
    chained = ""
    for number, step in enumerate(steps):
        fields = ", ".join([*(f"'{key}', {_STEP}.{key}" for key in known), *(f"'{key}', {value}" for key, value in step.items())])
        chained = (f"array(named_struct({fields}))" if number == 0
                   else f"transform({chained}, {_STEP} -> named_struct({fields}))")
        known += step
    index = (f"IF({eighth} IS NULL, NULL, shiftleft(CAST({d0h} AS BIGINT), {2 * order}) + {_spread_bits(i)} "
             f"+ shiftleft({_spread_bits(j)}, 1))")
    return f"transform({chained}, {_STEP} -> {index})[0]"


def position_columns(survey: Survey, has: Callable[[str], bool]) -> list[str]:
    """SQL of `ra` and `dec` (degrees, double) from where the survey keeps them (`has`:
    whether the alerts hold a column), and `_healpix_29`; null for records without a
    position (fink-mm's flat records). Each computed from the source, so that all three
    go in one projection with others (each projection more copies every row)."""
    sources = [(survey.filters.ra, survey.filters.dec), ("alert_ra", "alert_dec")]
    found = next(((ra, dec) for ra, dec in sources if has(ra) and has(dec)), None)
    ra, dec = (f"CAST({found[0]} AS DOUBLE)", f"CAST({found[1]} AS DOUBLE)") if found else ("CAST(NULL AS DOUBLE)",) * 2
    return [f"{ra} AS ra", f"{dec} AS dec", f"{healpix_sql(ra, dec)} AS {HEALPIX}"]


def with_position(survey: Survey, has: Callable[[str], bool]) -> Callable[[DataFrame], DataFrame]:
    """Alerts -> the same with their `position_columns`."""
    return lambda alerts: alerts.selectExpr("*", *position_columns(survey, has))
