"""The presets select what Fink's own filter code selects, alert by alert.

The reference is fink-filters and fink-utils themselves (the releases `fink_spark.transform.presets`
names), run on pandas frames of the same alerts. The alerts are the bundled real ones and
variants of them whose deciding fields sit on, just across and far across each threshold,
or are NaN or null, so that every preset selects some alerts and rejects others. No broker:
the job's decode and filter transformations run on the alerts as in-memory Kafka records.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import fastavro
import pandas as pd
import pytest
from conftest import avro_datum, kafka_messages, sample
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fink_spark.errors import ConfigError
from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.surveys import LSST, ZTF, Survey
from fink_spark.testing.publisher import read_saved_alerts
from fink_spark.transform.decode import decode_records, flatten_alerts
from fink_spark.transform.filters import apply_filters, check_filters, parse_filters
from fink_spark.transform.pandas_filters import argument_names, column_for, flattened_names, load_function
from fink_spark.transform.presets import EXTRAGALACTIC_CLASSES, FINK_FILTERS_VERSION, FINK_UTILS_VERSION

fink_filters = pytest.importorskip("fink_filters")
fink_utils = pytest.importorskip("fink_utils")
from fink_filters.rubin.blocks import b_xmatched_simbad_galaxy  # noqa: E402
from fink_filters.ztf.livestream.filter_early_sn_candidates.filter import early_sn_candidates_  # noqa: E402
from fink_filters.ztf.livestream.filter_kn_candidates.filter import kn_candidates_  # noqa: E402
from fink_filters.ztf.livestream.filter_sn_candidates.filter import sn_candidates_  # noqa: E402
from fink_filters.ztf.livestream.filter_sso_fink_candidates.filter import sso_fink_candidates_  # noqa: E402
from fink_filters.ztf.livestream.filter_sso_ztf_candidates.filter import sso_ztf_candidates_  # noqa: E402
from fink_utils.xmatch.simbad import return_list_of_eg_host  # noqa: E402

NAN = math.nan

# Values with which an alert passes each preset (`age` stands for candidate.jd - candidate.jdstarthist).
PASSING: dict[str, dict[str, Any]] = {
    "sn_candidate": {"snn_snia_vs_nonia": 0.9, "snn_sn_vs_all": 0.2, "cdsxmatch": "Unknown", "candidate.drb": 0.9,
                     "candidate.classtar": 0.9, "age": 30.0, "candidate.ndethist": 5, "roid": 0},
    "early_sn_candidate": {"snn_snia_vs_nonia": 0.2, "snn_sn_vs_all": 0.8, "rf_snia_vs_nonia": 0.7, "cdsxmatch": "LINER",
                           "candidate.drb": 0.9, "candidate.classtar": 0.9, "candidate.ndethist": 12, "roid": 1},
    "kn_candidate": {"rf_kn_vs_nonkn": 0.8, "candidate.drb": 0.9, "candidate.classtar": 0.9, "age": 2.0,
                     "candidate.ndethist": 3, "roid": 0, "cdsxmatch": "GravLens_Candidate"},
    "sso_ztf_candidate": {"roid": 3},
    "sso_fink_candidate": {"roid": 2},
}
SCORE_CROSSINGS = [0.5, 0.5000001, 0.1, NAN, None]
# Each deciding field on, across and far across its thresholds, NaN and null (where Fink's
# code accepts a null: it casts roid and ndethist to int).
CROSSINGS: dict[str, list[Any]] = {
    "snn_snia_vs_nonia": SCORE_CROSSINGS,
    "snn_sn_vs_all": SCORE_CROSSINGS,
    "rf_snia_vs_nonia": SCORE_CROSSINGS,
    "rf_kn_vs_nonkn": SCORE_CROSSINGS,
    "candidate.drb": [0.5, 0.51, 0.0, NAN, None],
    "candidate.classtar": [0.4, 0.41, 0.39, NAN, None],  # float: 0.4 is stored as 0.4000000059604645
    "candidate.ndethist": [1, 2, 19, 20, 21],
    "age": [4.99, 5.0, 89.99, 90.0, 90.01, NAN],
    "roid": [0, 1, 2, 3],
    "cdsxmatch": ["Possible_ClG", "Possible_SClG", "Galaxy", "Fail 504", "RRLyr", "Star", "SN", None],
}

FINK_ZTF: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "sn_candidate": lambda f: sn_candidates_(f.cdsxmatch, f.snn_snia_vs_nonia, f.snn_sn_vs_all, f.drb, f.classtar,
                                             f.jd, f.jdstarthist, f.roid, f.ndethist),
    "early_sn_candidate": lambda f: early_sn_candidates_(f.cdsxmatch, f.snn_snia_vs_nonia, f.snn_sn_vs_all,
                                                         f.rf_snia_vs_nonia, f.ndethist, f.drb, f.classtar),
    "kn_candidate": lambda f: kn_candidates_(f.rf_kn_vs_nonkn, f.drb, f.classtar, f.jd, f.jdstarthist, f.ndethist,
                                             f.cdsxmatch, f.roid),
    "sso_ztf_candidate": lambda f: sso_ztf_candidates_(f.roid),
    "sso_fink_candidate": lambda f: sso_fink_candidates_(f.roid),
    "extragalactic": lambda f: f.cdsxmatch.isin(return_list_of_eg_host()),
}


def with_values(alert: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a real alert with some fields set (`a.b` for a field of record `a`)."""
    changed = copy.deepcopy(alert)
    for path, value in values.items():
        if path == "age":
            changed["candidate"]["jdstarthist"] = None if value is None else changed["candidate"]["jd"] - value
            continue
        *records, name = path.split(".")
        target = changed
        for record in records:
            target = target[record]
        target[name] = value
    return changed


def renumbered(survey: Survey, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant with its own alert id, so that alerts can be matched one by one."""
    for number, record in enumerate(records):
        record[survey.id_column] = 10**15 + number
        nested = "candidate" if survey is ZTF else "diaSource"
        record[nested][survey.id_column] = record[survey.id_column]
    return records


def ztf_variants() -> tuple[str, list[dict[str, Any]]]:
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    real = itertools.cycle(saved.records)
    variants = [copy.deepcopy(record) for record in saved.records]
    for passing in PASSING.values():
        variants.append(with_values(next(real), passing))
        for field in passing:
            for value in CROSSINGS.get(field, []):
                variants.append(with_values(next(real), {**passing, field: value}))
    return saved.schema_text, renumbered(ZTF, variants)


def as_fink_reads(schema_text: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as Fink's code gets them: through Avro and back (a float field holds a
    32-bit value: 0.4 comes back as 0.4000000059604645)."""
    parsed = fastavro.parse_schema(json.loads(schema_text))
    return [fastavro.schemaless_reader(io.BytesIO(avro_datum(schema_text, record)), parsed) for record in records]


def decoded_alerts(spark: SparkSession, survey: Survey, schema_text: str, records: list[dict[str, Any]]) -> DataFrame:
    """The records as the job keeps them: Kafka records decoded, flattened, before filters."""
    writers = WriterSchemas(survey)
    writers.learn(schema_text.encode())
    messages = kafka_messages(spark, schema_text, records, f"fink_variants_{survey.name}")
    table = TableSchema.first(schema_text, "test")
    return messages.transform(decode_records(writers, table, survey)).transform(flatten_alerts(survey)).cache()


def selected_by(table: DataFrame, survey: Survey, preset: str, **parameters: float) -> set[int]:
    chosen = table.transform(apply_filters(parse_filters([{"preset": preset, **parameters}], survey)))
    return {row[0] for row in chosen.select(survey.id_column).collect()}


@pytest.fixture(scope="module")
def ztf(spark: SparkSession) -> tuple[DataFrame, pd.DataFrame]:
    schema_text, records = ztf_variants()
    table = decoded_alerts(spark, ZTF, schema_text, records)
    records = as_fink_reads(schema_text, records)
    frame = pd.DataFrame({
        "candid": [r["candid"] for r in records],
        "cdsxmatch": [r["cdsxmatch"] for r in records],
        **{name: [r[name] for r in records] for name in ("snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia",
                                                          "rf_kn_vs_nonkn", "roid")},
        **{name: [r["candidate"][name] for r in records] for name in ("drb", "classtar", "jd", "jdstarthist", "ndethist")},
    })
    return table, frame


def test_the_host_galaxy_classes_are_fink_utils_list() -> None:
    assert fink_utils.__version__ == FINK_UTILS_VERSION
    assert fink_filters.__version__ == FINK_FILTERS_VERSION
    assert sorted(EXTRAGALACTIC_CLASSES) == sorted(return_list_of_eg_host())


@pytest.mark.parametrize("preset", sorted(FINK_ZTF))
def test_ztf_presets_select_what_fink_filters_selects(ztf: tuple[DataFrame, pd.DataFrame], preset: str) -> None:
    table, frame = ztf
    assert table.count() == len(frame), "every variant is a valid alert"
    expected = set(frame.candid[FINK_ZTF[preset](frame).fillna(False).astype(bool)])
    assert 0 < len(expected) < len(frame), f"{preset}: the variants must make it say yes and no"
    chosen = selected_by(table, ZTF, preset)
    assert sorted(chosen - expected) == [] and sorted(expected - chosen) == []


def test_nan_scores_reject_as_in_fink(ztf: tuple[DataFrame, pd.DataFrame]) -> None:
    """Spark orders NaN above every number: a NaN score must still fail `score > 0.5`."""
    table, _ = ztf
    nan_drb = {row.candid for row in table.where("isnan(candidate.drb)").select("candid").collect()}
    assert nan_drb, "some variants have drb = NaN"
    assert not nan_drb & selected_by(table, ZTF, "sn_candidate")
    reliable = table.transform(apply_filters(parse_filters([{"preset": "min_reliability", "value": 0.3}], ZTF)))
    assert not nan_drb & {row.candid for row in reliable.select("candid").collect()}


def test_lsst_extragalactic_is_fink_rubin_galaxy_block(spark: SparkSession) -> None:
    saved = next(read_saved_alerts([sample("lsst-2026")]))
    classes = ["Unknown", "LINER", "Possible_SClG", "GravLens_Candidate", "Galaxy", "Star", "RRLyr", None]
    records = renumbered(LSST, [with_values(record, {"xm.simbad_otype": otype})
                                for record in saved.records[:2] for otype in classes])
    table = decoded_alerts(spark, LSST, saved.schema_text, records)
    otypes = pd.Series([r["xm"]["simbad_otype"] for r in as_fink_reads(saved.schema_text, records)])
    expected = {r["diaSourceId"] for r, keep in zip(records, b_xmatched_simbad_galaxy(otypes)) if keep}
    assert 0 < len(expected) < len(records)
    assert selected_by(table, LSST, "extragalactic") == expected


def test_not_sso_says_yes_and_no(spark: SparkSession) -> None:
    """not_sso has no fink-filters counterpart (Fink's SSO topics read roid only): checked on
    variants across its radius, with null and NaN distances (unknown: kept, as null is)."""
    saved = next(read_saved_alerts([sample("ztf-2026")]))
    cases = [(-999.0, 0, True), (None, 0, True), (NAN, 0, True), (0.5, 0, False), (4.99, 0, False), (5.0, 0, False),
             (5.01, 0, True), (12.0, 0, True), (12.0, 3, False), (-999.0, 2, True)]
    records = renumbered(ZTF, [with_values(saved.records[i], {"candidate.ssdistnr": distance, "roid": roid})
                               for i, (distance, roid, _) in enumerate(cases)])
    table = decoded_alerts(spark, ZTF, saved.schema_text, records)
    expected = {record["candid"] for record, (_, _, kept) in zip(records, cases) if kept}
    assert selected_by(table, ZTF, "not_sso", radius=5) == expected


# Fink's filters run unchanged ({fink_filter: path}): every livestream filter of fink-filters
# whose module imports here (six ZTF ones need astroquery or fink-science) and whose
# arguments the alerts hold, with the light curves Fink's pipeline adds (`cjdc`, ...; one ZTF
# filter reads a science module's column), against fink-filters' own way of running it.
def livestream_functions(survey: str) -> list[str]:
    import importlib
    import pkgutil

    package = importlib.import_module(f"fink_filters.{survey}.livestream")
    paths = []
    for module in pkgutil.iter_modules(package.__path__):
        name = module.name.removeprefix("filter_")
        paths.append(f"{package.__name__}.{module.name}.filter.{name}")
    return paths


def fink_utils_column(argument: str, table: DataFrame) -> str | None:
    """The column fink-utils maps an argument to (its `get_cols_from_args` over its
    `return_flatten_names`, as `expand_function_from_string` does), or None where it refuses."""
    from fink_utils.spark.utils import get_cols_from_args

    try:
        return str(get_cols_from_args(argument, fink_utils_names(table)))
    except AssertionError:
        return None


_FINK_NAMES: dict[int, list[str]] = {}


def fink_utils_names(table: DataFrame) -> list[str]:
    """fink-utils' flattened names of a table, once per table (it analyses a plan per struct)."""
    from fink_utils.spark.utils import return_flatten_names

    if id(table) not in _FINK_NAMES:
        _FINK_NAMES[id(table)] = return_flatten_names(table, pref="", flatten_schema=[])
    return _FINK_NAMES[id(table)]


@pytest.fixture(scope="module")
def lsst(spark: SparkSession) -> DataFrame:
    """The real LSST alerts of 2026, and variants with the values Fink's Rubin filters look at."""
    saved = next(read_saved_alerts([sample("lsst-2026")]))
    values = [{"xm.tns_fullname": "SN 2026abc"}, {"xm.simbad_otype": "SN"}, {"xm.simbad_otype": "Galaxy"},
              {"xm.simbad_otype": "Star"}, {"pred.is_sso": True}, {"pred.is_sso": False},
              {"clf.snnSnVsOthers_score": 0.95, "clf.cats_class": 11, "clf.cats_score": 0.95},
              {"xm.mangrove_lum_dist": 60.0, "xm.legacydr8_zphot": 0.05}, {"clf.elephant_kstest_template": 0.001},
              {"xm.gaiadr3_DR3Name": None, "xm.gaiadr3_Plx": None, "xm.vsx_Type": None}]
    records = [copy.deepcopy(record) for record in saved.records]
    records += [with_values(record, changed) for changed in values for record in saved.records]
    return decoded_alerts(spark, LSST, saved.schema_text, renumbered(LSST, records))


def test_arguments_map_to_columns_as_fink_utils_maps_them(ztf: tuple[DataFrame, pd.DataFrame], lsst: DataFrame) -> None:
    asked = 0
    for table, survey in ((ztf[0], "ztf"), (lsst, "rubin")):
        arguments = {"ra", "dec", "jd", "tns", "diaObjectId", "midpointMjdTai", "psfFlux", "no_such_column"}
        for path in livestream_functions(survey):
            try:
                arguments |= set(argument_names(load_function(path, "test")))
            except ConfigError:
                continue  # a module that does not import here
        names = flattened_names(table.schema)
        for argument in sorted(arguments):
            theirs = fink_utils_column(argument, table)
            if theirs is None:
                with pytest.raises(ConfigError, match=f"argument '{argument}'"):
                    column_for(argument, names, "filters[0]")
            else:
                assert str(F.col(column_for(argument, names, "filters[0]"))) == theirs, argument
            asked += 1
    assert asked > 60


def fink_verdicts(table: DataFrame, paths: list[str], id_column: str) -> dict[str, set[int] | str]:
    """What each filter keeps when fink-filters' own runner runs it, or "raises": the columns
    found as fink-utils' expand_function_from_string finds them, the function run in a pandas
    UDF as its FinkUDF runs it (apply_block's way; apply_user_defined_filter calls the ZTF
    functions' own pandas UDF, which wraps the same function). All filters in one pass: each
    verdict comes with whether the function raised on its batch (then none is kept)."""
    from fink_utils.spark.utils import get_cols_from_args
    from pyspark.sql.types import BooleanType, StructField, StructType

    verdict = StructType([StructField("kept", BooleanType()), StructField("raised", BooleanType())])

    def guarded(function: Callable[..., pd.Series]) -> Callable[..., pd.DataFrame]:
        def run(*columns: pd.Series) -> pd.DataFrame:
            try:
                return pd.DataFrame({"kept": function(*columns).reset_index(drop=True), "raised": False})
            except Exception:  # noqa: BLE001 - the verdict says so
                return pd.DataFrame({"kept": [None] * len(columns[0]), "raised": True})
        return run

    columns = []
    for path in paths:
        function = load_function(path, "test")
        arguments = [get_cols_from_args(name, fink_utils_names(table)) for name in argument_names(function)]
        columns.append(F.pandas_udf(guarded(getattr(function, "func", function)), verdict)(*arguments).alias(path))
    rows = table.select(id_column, *columns).collect()
    return {path: "raises" if any(row[path].raised for row in rows) else {row[0] for row in rows if row[path].kept}
            for path in paths}


def our_verdicts(table: DataFrame, paths: list[str], survey: Survey) -> dict[str, set[int] | str]:
    """What each {fink_filter: path} keeps, in one pass (the verdicts the filters add), or
    "raises" where the function raised (its alerts would go to the quarantine, with why)."""
    from fink_spark.transform.filters import prepared

    filters = parse_filters([{"fink_filter": path} for path in paths], survey)
    verdicts = prepared(filters, table).select(survey.id_column, *[F.col(item.scratch).alias(path)
                                                                   for item, path in zip(filters, paths)])
    rows = verdicts.collect()
    for path in paths:
        errors = {row[path].error for row in rows} - {None}
        assert len(errors) <= 1 and all(error.split(":")[0].endswith("Error") for error in errors), errors
    return {path: "raises" if any(row[path].error for row in rows) else {row[0] for row in rows if row[path].passed}
            for path in paths}


def as_finks_pipeline_gives_them(table: DataFrame) -> DataFrame:
    """ZTF alerts with the columns Fink's pipeline adds before its filters, as fink-filters'
    doctests add them (fink-utils' concat_col, then the trailing c of fink-broker #457)."""
    from fink_utils.spark.utils import concat_col

    for name in ("jd", "fid", "magpsf", "sigmapsf", "diffmaglim", "magnr", "sigmagnr", "magzpsci", "isdiffpos"):
        table = concat_col(table, name, prefix="c").withColumnRenamed(f"c{name}", f"c{name}c")
    return table.withColumn("cstampDatac", table["cutoutScience.stampData"])


def test_every_livestream_filter_keeps_what_fink_filters_keeps(ztf: tuple[DataFrame, pd.DataFrame], lsst: DataFrame) -> None:
    """Fink's runner reads the ZTF alerts as its pipeline gives them (the light curves added);
    fink-spark reads them as distributed, and makes the light curves itself."""
    from fink_utils.spark.utils import apply_user_defined_filter

    said_yes_and_no, raised, refused, ran = [], [], [], 0
    for table, finks, survey, kind in ((ztf[0], as_finks_pipeline_gives_them(ztf[0]), ZTF, "ztf"),
                                       (lsst, lsst, LSST, "rubin")):
        runnable = []
        for path in livestream_functions(kind):
            try:
                function = load_function(path, "test")
            except ConfigError as error:  # fink-filters cannot import it either
                assert "cannot import" in str(error) and "No module named" in str(error)
                with pytest.raises(ImportError):
                    apply_user_defined_filter(table, path)
                continue
            missing = [a for a in argument_names(function) if fink_utils_column(a, finks) is None]
            if missing:  # a column of Fink's science modules the distributed alerts lack: both refuse it
                with pytest.raises(ConfigError, match=f"argument '{missing[0]}'"):
                    check_filters(parse_filters([{"fink_filter": path}], survey), table)
                refused.append(path)
                continue
            runnable.append(path)
        ours = our_verdicts(table, runnable, survey)
        assert ours == fink_verdicts(finks, runnable, survey.id_column)
        alerts = table.count()
        said_yes_and_no += [path for path, kept in ours.items() if isinstance(kept, set) and 0 < len(kept) < alerts]
        raised += [path for path, kept in ours.items() if kept == "raises"]
        ran += len(runnable)
    assert ran >= 28 and len(raised) <= 4 and len(refused) <= 1, (ran, raised, refused)
    assert len(said_yes_and_no) >= 8, said_yes_and_no


def reads_a_column_of_two_records(diaObjectId: pd.Series) -> pd.Series:  # noqa: N803 - named as the column
    """diaSource.diaObjectId or diaObject.diaObjectId? (a filter for the test below)"""
    return diaObjectId > 0


def reads_a_column_nobody_has(magpsf_corrected: pd.Series) -> pd.Series:
    return magpsf_corrected < 19


def test_a_fink_filter_that_cannot_run_says_why_at_start_up(lsst: DataFrame) -> None:
    cases = {
        "in_tns": "must be a dotted path package.module.function",
        "fink_filters.ztf.livestream.filter_early_kn_candidates.filter.early_kn_candidates":
            "cannot import fink_filters.ztf.livestream.filter_early_kn_candidates.filter .*No module named 'astroquery'",
        "fink_filters.rubin.livestream.filter_in_tns.filter.in_tn": "has no function in_tn; did you mean in_tns",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_filters([{"fink_filter": path}], LSST)
    with pytest.raises(ConfigError, match="must be an SQL expression, a mapping with 'preset'"):
        parse_filters([{"fink_filter": "a.b", "preset": "sn_candidate"}], LSST)
    # an argument that names several columns, or none: before any alert is read (the job's start checks the filters)
    with pytest.raises(ConfigError, match="argument 'diaObjectId' could be any of diaSource.diaObjectId, diaObject.diaObjectId"):
        check_filters(parse_filters([{"fink_filter": f"{__name__}.reads_a_column_of_two_records"}], LSST), lsst)
    with pytest.raises(ConfigError, match="argument 'magpsf_corrected' names no column of the alerts"):
        check_filters(parse_filters([{"fink_filter": f"{__name__}.reads_a_column_nobody_has"}], LSST), lsst)
