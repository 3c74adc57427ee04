"""Replicated alerts: a copy patched in the bytes is exactly the full encoding of the copy."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from fink_spark.paths import SAMPLE_DIR
from fink_spark.surveys import LSST, ZTF
from fink_spark.testing.publisher import ReplicaEncoder, encode, read_saved_alerts, replicate


@pytest.mark.parametrize(("folder", "survey"), [("ztf-2026", ZTF), ("ztf-0p2", ZTF), ("ztf-raw-3.3", ZTF),
                                                ("lsst-2026", LSST), ("lsst-rubin-9.0", LSST)])
def test_patched_copies_equal_full_encodings(folder: str, survey) -> None:  # noqa: ANN001
    for saved in read_saved_alerts([SAMPLE_DIR / folder]):
        parsed = fastavro.parse_schema(json.loads(saved.schema_text))
        for record in saved.records:
            encoder = ReplicaEncoder(record, parsed, survey)
            assert encoder.spans, f"{saved.path}: ids not found in the encoded alert"
            for copy in (0, 27, 40_000):
                assert encoder.copy(copy) == encode(replicate(record, survey, copy), parsed), (saved.path, copy)
            clone = replicate(record, survey, 27)
            moved = {"ztf": {"candid", "candidate", "objectId"}, "lsst": {"diaSourceId", "diaSource"}}[survey.name]
            assert {name for name in record if clone[name] is not record[name]} == moved  # the others are shared
            decoded = fastavro.schemaless_reader(io.BytesIO(encoder.copy(27)), parsed)
            assert decoded[survey.id_column] == record[survey.id_column] + 27 * 10**12
