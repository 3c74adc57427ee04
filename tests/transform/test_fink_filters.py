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

from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.surveys import LSST, ZTF, Survey
from fink_spark.testing.publisher import read_saved_alerts
from fink_spark.transform.decode import decode_records, flatten_alerts
from fink_spark.transform.filters import apply_filters, parse_filters
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
