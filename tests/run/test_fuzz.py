"""Fuzzed messages among real alerts (Hypothesis): keys whose schemas rename, retype, remove,
add or nest fields, 1,000-level nesting, a 5 MB schema, keys that are not JSON; values
truncated, extended and bit-flipped. Nothing stops the job, every genuine alert is kept
once, and every other message is quarantined with a reason.

CI runs a bounded number of examples (`FINK_SPARK_FUZZ_EXAMPLES`, default 6 in memory and 2
through the broker); bench/ runs more with another seed."""

from __future__ import annotations

import copy
import json
import os
import random

import fastavro
from conftest import USER, avro_datum, job_config, kafka_frame, kafka_messages, run_job, sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fink_spark.schema.table import TableSchema
from fink_spark.schema.writer import WriterSchemas
from fink_spark.surveys import ZTF
from fink_spark.testing.publisher import encode, read_saved_alerts
from fink_spark.transform.decode import decode_records

EXAMPLES = int(os.environ.get("FINK_SPARK_FUZZ_EXAMPLES", "6"))
SAVED = next(read_saved_alerts([sample("ztf-2026")]))
SCHEMA = json.loads(SAVED.schema_text)
PARSED = fastavro.parse_schema(SCHEMA)
VALUES = [avro_datum(SAVED.schema_text, record) for record in SAVED.records]


def nested(depth: int) -> str:
    """A schema text nesting `depth` records (built as text: json.dumps itself recurses)."""
    head = "".join(f'{{"type": "record", "name": "r{level}", "fields": [{{"name": "f", "type": ' for level in range(depth))
    return head + '"int"' + "}]}" * depth


def huge() -> str:
    """A 5 MB schema: the real one with 38,000 more optional fields."""
    schema = copy.deepcopy(SCHEMA)
    schema["fields"] += [{"name": f"extra_{n}_" + "x" * 60, "type": ["null", "double"], "default": None}
                         for n in range(38_000)]
    return json.dumps(schema)


@st.composite
def schema_change(draw: st.DrawFn) -> tuple[dict, bool]:
    """A writer schema as Fink's change, and whether real alerts re-encode with it."""
    schema = copy.deepcopy(SCHEMA)
    fields = schema["fields"]
    index = draw(st.integers(5, len(fields) - 1))  # ids and candidate stay
    kind = draw(st.sampled_from(["rename", "retype", "remove", "add", "nest"]))
    name = fields[index]["name"]
    if kind == "rename":
        fields[index]["name"] = draw(st.sampled_from([f"{name}_v2", f"2{name}", f"{name}-x", f"{name} y"]))
        fields[index]["default"] = None if isinstance(fields[index]["type"], list) and "null" in fields[index]["type"] else 0
        return schema, False
    if kind == "retype":
        fields[index]["type"] = draw(st.sampled_from([["null", "string"], ["null", "long"], "boolean",
                                                      {"type": "array", "items": "int"}]))
        return schema, False
    if kind == "remove":
        del fields[index]
        return schema, True
    if kind == "add":
        fields.append({"name": draw(st.sampled_from(["score", "9lives", "new field", "x.y"])),
                       "type": ["null", draw(st.sampled_from(["double", "string", "long"]))], "default": None})
        return schema, True
    fields[index] = {"name": name, "type": ["null", {"type": "record", "name": f"{name}_box", "fields": [
        {"name": "value", "type": fields[index]["type"]}]}], "default": None}
    return schema, False


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[bytes, bytes, str]]:
    """(key, value, what it is) of fuzzed messages: 'alert' ones must be kept."""
    found = []
    for _ in range(draw(st.integers(1, 4))):
        alert = draw(st.integers(0, len(VALUES) - 1))
        value = VALUES[alert]
        kind = draw(st.sampled_from(["truncated", "extended", "flipped", "schema", "deep", "not json"]))
        if kind == "truncated":
            found.append((SAVED.schema_text.encode(), value[: draw(st.integers(0, len(value) - 1))], kind))
        elif kind == "extended":
            found.append((SAVED.schema_text.encode(), value + draw(st.binary(min_size=1, max_size=64)), kind))
        elif kind == "flipped":
            position = draw(st.integers(0, len(value) - 1))
            flipped = value[:position] + bytes([value[position] ^ (1 << draw(st.integers(0, 7)))]) + value[position + 1:]
            found.append((SAVED.schema_text.encode(), flipped, kind))
        elif kind == "schema":
            schema, reencodes = draw(schema_change())
            text = json.dumps(schema)
            if reencodes:
                record = {field["name"]: SAVED.records[alert].get(field["name"]) for field in schema["fields"]}
                found.append((text.encode(), encode(record, fastavro.parse_schema(schema)), "alert"))
            found.append((text.encode(), value, "schema"))  # the original bytes under the changed schema
        elif kind == "deep":
            found.append((nested(1000).encode(), value, kind))
        else:
            found.append((draw(st.binary(min_size=1, max_size=40)).replace(b"{", b"["), value, kind))
    return found


def decode_all(spark: SparkSession, fuzzed: list[tuple[bytes, bytes, str]]) -> list:  # noqa: ANN401
    """Real alerts then fuzzed messages, decoded as the job decodes them once it has met every key."""
    records = kafka_messages(spark, SAVED.schema_text, SAVED.records, "fuzz")
    rows = [(key, value, "fuzz", 0, len(VALUES) + n, None) for n, (key, value, _) in enumerate(fuzzed)]
    records = records.unionByName(kafka_frame(spark, rows))
    writers = WriterSchemas(ZTF)
    table = TableSchema.first(SAVED.schema_text, "start")
    for key in [SAVED.schema_text.encode(), *(key for key, _, _ in fuzzed)]:
        if writers.learn(key) and key in writers.known:
            table.merge(writers.known[key], "fuzz")
    decoded = records.transform(decode_records(writers, table, ZTF))
    return decoded.select("offset", F.col("alert.candid").alias("candid"), "reject_reason").orderBy("offset").collect()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzzed=messages())
def test_fuzzed_messages_never_stop_decoding_and_every_real_alert_is_kept(spark: SparkSession, fuzzed) -> None:  # noqa: ANN001
    rows = decode_all(spark, fuzzed)
    assert [(row.candid, row.reject_reason) for row in rows[: len(VALUES)]] == [
        (record["candid"], None) for record in SAVED.records]
    for row, (_, _, kind) in zip(rows[len(VALUES):], fuzzed):
        if kind == "alert":
            assert row.reject_reason is None, row
        else:  # quarantined with a reason, or (a harmless flip, a removed field) a genuine alert
            assert row.reject_reason is None or row.reject_reason.strip(), row


def test_a_five_megabyte_schema_and_a_thousand_levels_are_quarantined_with_why(spark: SparkSession) -> None:
    rows = decode_all(spark, [(huge().encode(), VALUES[0], "huge"), (nested(1000).encode(), VALUES[1], "deep")])
    assert rows[len(VALUES)].reject_reason == (
        "key's schema is 5.0 MB; fink-spark decodes writer schemas up to 1 MB (Fink's are about 40 kB)")
    assert rows[len(VALUES) + 1].reject_reason == (
        "key's schema nests 3000 levels deep; fink-spark decodes schemas up to 200 levels (Spark's Avro reader "
        "recurses once per level)")


@settings(max_examples=int(os.environ.get("FINK_SPARK_FUZZ_JOBS", "2")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzzed=messages(), seed=st.integers(0, 2**32 - 1))
def test_the_job_never_stops_on_fuzzed_messages_among_real_alerts(spark, broker, new_topic, tmp_path_factory, fuzzed,  # noqa: ANN001
                                                                  seed: int) -> None:
    from confluent_kafka import Producer

    from fink_spark.table.read import read_table

    topic = new_topic("fink_fuzz_ztf")
    sent = [(SAVED.schema_text.encode(), value, "real") for value in VALUES] + fuzzed
    random.Random(seed).shuffle(sent)
    producer = Producer({**broker.client_config(USER), "message.max.bytes": 10_000_000})
    for key, value, _ in sent:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0
    folder = tmp_path_factory.mktemp("fuzz")
    run_job(spark, job_config(broker, folder, [topic]))
    kept = read_table(spark, str(folder / "alerts")).select("kafka_offset", "candid").collect()
    quarantine = folder / "alerts_quarantine"
    quarantined = (read_table(spark, str(quarantine)).select("kafka_offset", "reject_reason").collect()
                   if list(quarantine.rglob("*.parquet")) else [])  # a draw of messages that all decode
    assert len(kept) + len(quarantined) == len(sent)  # every message once, in one of the two
    assert all(row.reject_reason for row in quarantined)
    real = {offset for offset, (_, _, kind) in enumerate(sent) if kind in ("real", "alert")}
    assert real <= {row.kafka_offset for row in kept}
