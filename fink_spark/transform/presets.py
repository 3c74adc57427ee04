"""Fink's filters as named presets with parameters (`{preset: cone, ra: 10, dec: -45, radius: 0.5}`):
each becomes a Spark SQL condition over the alert's columns, as fink-filters and fink-utils
define it (tests/transform/test_fink_filters.py runs their own code on the same alerts)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fink_spark.errors import ConfigError
from fink_spark.sections import Section
from fink_spark.surveys import JD_MINUS_MJD, Survey
from fink_spark.transform.sky import separation_sql

# The fink-filters and fink-utils releases whose conditions the presets follow; the tests
# run those releases' own code on the same alerts (tests/transform/test_fink_filters.py).
FINK_FILTERS_VERSION, FINK_UTILS_VERSION = "7.45", "0.79.0"

# SIMBAD classes compatible with a host galaxy, as Fink defines them (fink-utils,
# xmatch.simbad.return_list_of_eg_host): unknown or failed cross-matches, supernovae,
# galaxies, AGN and clusters of galaxies.
EXTRAGALACTIC_CLASSES = (
    "Unknown", "Candidate_SN*", "SN*_Candidate", "SN", "Transient", "Fail", "Fail 504",
    "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG",
    "LSB_G", "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl", "PartofG",
    "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG", "SuperClG", "Void",
    "LINER", "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
)


def above(column: str, value: float, inclusive: bool = False) -> str:
    """`column > value` (or >=) as Fink's pandas code means it: NaN is above nothing.

    Spark orders NaN above every number, so `NaN > 0.5` is true there; in pandas it is
    false. Null stays null (rejected) either way.
    """
    return f"({column} {'>=' if inclusive else '>'} {value!r} AND NOT isnan({column}))"


def _mjd(value: Any, where: str) -> float:
    """A time given as an ISO date, a JD or an MJD, as MJD."""
    if isinstance(value, (date, datetime)) or isinstance(value, str):
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError as error:
            raise ConfigError(f"{where} must be an ISO date, a JD or an MJD, not {value!r}.") from error
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            moment = moment.replace(tzinfo=None) - moment.utcoffset()  # type: ignore[operator]
        days = (moment - datetime(1858, 11, 17)).total_seconds() / 86400
        return days
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be an ISO date, a JD or an MJD, not {value!r}.")
    return float(value) - JD_MINUS_MJD if value > JD_MINUS_MJD else float(value)


def _range(column: str | None, params: Section, survey: Survey, what: str) -> str:
    if column is None:
        raise ConfigError(f"{params.path}: the {what} preset does not apply to {survey.label} alerts.")
    low, high = params.optional("min"), params.optional("max")
    if low is None and high is None:
        raise ConfigError(f"{params.path}: give min, max or both.")
    parts = ([above(column, low, inclusive=True)] if low is not None else []) + ([f"{column} <= {high!r}"] if high is not None else [])
    return " AND ".join(parts)


def _params(item: dict[str, Any], where: str, known: set[str]) -> Section:
    """A preset's parameters (`preset` and those in `known`), read with errors that name `filters[i].key`."""
    return Section(item, where, known | {"preset"})


def preset_condition(item: dict[str, Any], survey: Survey, where: str) -> str:
    """The Spark SQL condition of a preset filter (`item`: the preset's name and parameters)."""
    name = item.get("preset")
    columns = survey.filters
    if name == "not_sso":
        params = _params(item, where, {"radius"} if columns.not_sso_takes_radius else set())
        radius = params.number("radius", default=5.0, low=0) if columns.not_sso_takes_radius else 0
        return columns.not_sso.format(radius=radius)
    if name == "cone":
        params = _params(item, where, {"ra", "dec", "radius"})
        ra, dec = params.number("ra", low=0, high=360), params.number("dec", low=-90, high=90)
        radius = params.number("radius", low=0, high=180)
        return f"{separation_sql(columns.ra, columns.dec, repr(ra), repr(dec))} <= {radius * 3600!r}"
    if name == "time_window":
        params = _params(item, where, {"start", "end"})
        bounds = []
        if "start" in item:
            bounds.append(f"({survey.mjd_expression}) >= {_mjd(item['start'], where + '.start')!r}")
        if "end" in item:
            bounds.append(f"({survey.mjd_expression}) < {_mjd(item['end'], where + '.end')!r}")
        if not bounds:
            raise ConfigError(f"{where}: give start, end or both.")
        return " AND ".join(bounds)
    if name == "magnitude":
        return _range(columns.magnitude, _params(item, where, {"min", "max"}), survey, "magnitude")
    if name == "flux":
        return _range(columns.flux, _params(item, where, {"min", "max"}), survey, "flux")
    if name == "min_reliability":
        params = _params(item, where, {"value"})
        value = params.number("value", low=0, high=1)
        return above(columns.reliability, value, inclusive=True)
    if name == "extragalactic":
        _params(item, where, set())
        return _extragalactic(columns.cross_match)
    if name in LIVESTREAM:
        _params(item, where, set())
        if not columns.livestream:
            raise ConfigError(f"{where}: the {name} preset is one of Fink's ZTF livestream topics; "
                              f"it does not apply to {survey.label} alerts.")
        return LIVESTREAM[name].format(extragalactic=_extragalactic(columns.cross_match))
    known = ", ".join(sorted(PRESETS))
    raise ConfigError(f"{where}.preset is {name!r}; known presets: {known}.")


def _extragalactic(column: str) -> str:
    classes = ", ".join("'" + label.replace("'", "''") + "'" for label in EXTRAGALACTIC_CLASSES)
    return f"{column} IN ({classes})"


# The conditions of Fink's ZTF livestream topics, as fink-filters publishes them
# (fink_filters/ztf/livestream/filter_*/filter.py), as Spark SQL.
_SN_LIKE = (
    f"({above('snn_snia_vs_nonia', 0.5)} OR {above('snn_sn_vs_all', 0.5)}) AND {{extragalactic}}"
    f" AND {above('candidate.drb', 0.5)} AND {above('candidate.classtar', 0.4)}"
)

LIVESTREAM = {
    "early_sn_candidate": _SN_LIKE + f" AND candidate.ndethist <= 20 AND {above('rf_snia_vs_nonia', 0.5)}",
    "sn_candidate": _SN_LIKE + " AND candidate.jd - candidate.jdstarthist <= 90"
    " AND candidate.ndethist > 1 AND coalesce(roid, 0) != 3",
    "kn_candidate": f"{above('rf_kn_vs_nonkn', 0.5)} AND {above('candidate.drb', 0.5)} AND {above('candidate.classtar', 0.4)}"
    " AND candidate.jd - candidate.jdstarthist < 5 AND candidate.ndethist < 20"
    " AND coalesce(roid, 0) != 3 AND {extragalactic}",
    "sso_ztf_candidate": "roid = 3",
    "sso_fink_candidate": "roid = 2",
}

# `watchlist` is `fink_spark.transform.filters.watchlist`: it adds columns, then keeps alerts.
PRESETS = ("not_sso", "cone", "time_window", "magnitude", "flux", "min_reliability", "extragalactic", "watchlist",
           *LIVESTREAM)
