"""Replicated alerts: a copy patched in the bytes is exactly the full encoding of the copy."""

from __future__ import annotations

import io
import json

import fastavro
import numpy as np
import pytest

from fink_spark.paths import SAMPLE_DIR
from fink_spark.surveys import LSST, ZTF
from fink_spark.testing.publisher import POSITION_PAIRS, TIMES, ReplicaEncoder, encode, read_saved_alerts, replicate


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


def _positions(value, pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:  # noqa: ANN001
    """Every (ra, dec) pair at any depth, in order."""
    if isinstance(value, list):
        for item in value:
            _positions(item, pairs)
    elif isinstance(value, dict):
        for ra, dec in POSITION_PAIRS:
            if isinstance(value.get(ra), float) and isinstance(value.get(dec), float):
                pairs.append((value[ra], value[dec]))
        for item in value.values():
            _positions(item, pairs)
    return pairs


def _times(value, pattern, found: list[float]) -> list[float]:  # noqa: ANN001
    if isinstance(value, list):
        for item in value:
            _times(item, pattern, found)
    elif isinstance(value, dict):
        for name, item in value.items():
            if isinstance(item, float) and pattern.fullmatch(name):
                found.append(item)
            _times(item, pattern, found)
    return found


def _vectors(pairs: list[tuple[float, float]]) -> np.ndarray:
    ra, dec = np.radians(np.array(pairs)).T
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


@pytest.mark.parametrize(("folder", "survey"), [("ztf-2026", ZTF), ("lsst-2026", LSST)])
def test_moved_copies_turn_every_position_alike_and_shift_every_time(folder: str, survey) -> None:  # noqa: ANN001
    saved = next(read_saved_alerts([SAMPLE_DIR / folder]))
    parsed = fastavro.parse_schema(json.loads(saved.schema_text))
    for record in saved.records[:4]:
        encoder = ReplicaEncoder(record, parsed, survey, moved=True)
        assert encoder.spans, f"{saved.path}: positions not found in the encoded alert"
        for copy, days in ((5, -3.0), (40_000, 0.0)):
            patched = encoder.copy(copy, days)
            assert patched == encode(replicate(record, survey, copy, moved=True, days=days), parsed)
            decoded = fastavro.schemaless_reader(io.BytesIO(patched), parsed)
            before, after = _vectors(_positions(record, [])), _vectors(_positions(decoded, []))
            assert len(before) >= 2 and len(after) == len(before)
            assert np.abs(before @ before.T - after @ after.T).max() < 1e-12  # every separation kept
            assert np.abs(before - after).max() > 1e-3  # and moved
            times = np.array(_times(decoded, TIMES[survey.name], [])) - np.array(_times(record, TIMES[survey.name], []))
            assert len(times) and np.allclose(times, days, atol=1e-6)
    with pytest.raises(ValueError, match=r"only an encoder of moved copies \(moved=True\) shifts times"):
        ReplicaEncoder(saved.records[0], parsed, survey).copy(3, 1.0)
