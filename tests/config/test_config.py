"""Configuration errors name the key at fault, before Spark starts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fink_spark.config.job import Secret, load_config, parse_config
from fink_spark.errors import ConfigError
from fink_spark.kafka.client import Message
from fink_spark.kafka.source import stream_options
from fink_spark.run.stream import records_per_batch

VALID = {
    "survey": "ztf",
    "kafka": {"servers": "127.0.0.1:9092", "username": "u", "password_env": "FINK_TEST_PW",
              "group_id": "g", "topics": ["fink_sn_candidates_ztf"]},
    "output": {"format": "parquet", "table": {"path": "out/alerts", "checkpoint": "out/chk"}},
}


def config_with(change) -> dict:  # noqa: ANN001
    data = copy.deepcopy(VALID)
    change(data)
    return data


@pytest.fixture(autouse=True)
def password(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FINK_TEST_PW", "s3cret-pw")


def test_valid_config_keeps_the_password_secret(tmp_path: Path) -> None:
    config = parse_config(VALID, base=tmp_path)
    assert config.kafka.password == Secret("s3cret-pw")
    assert "s3cret-pw" not in repr(config) and "s3cret-pw" not in str(config)
    assert config.output.path == str(tmp_path / "out" / "alerts")
    assert config.output.partition_by == ("topic", "year", "month", "day")
    assert config.trigger.processing_time == "10 seconds" and not config.trigger.available_now


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["kafka"].pop("servers"), "Missing required key 'kafka.servers' (or 'kafka.credentials', naming fink-client's)."),
        (lambda d: d.pop("survey"), "Missing required key 'survey'."),
        (lambda d: d.update(survey="atlas"), "'survey' is 'atlas'; it must be one of lsst, ztf."),
        (lambda d: d["kafka"].update(max_offsets_per_trigger="many"),
         "'kafka.max_offsets_per_trigger' must be of type int, not str ('many')."),
        (lambda d: d["kafka"].update(topic="x"), "Unknown key 'kafka.topic'. Did you mean 'kafka.topics'?"),
        (lambda d: d["kafka"].update(starting_offsets="oldest"),
         "'kafka.starting_offsets' must be 'earliest', 'latest' or a time such as 2026-11-28T20:00:00Z, not 'oldest'."),
        (lambda d: d["output"]["table"].pop("checkpoint"), "Missing required key 'output.table.checkpoint'."),
        (lambda d: d["kafka"].update(password_env="NOT_SET_ANYWHERE"),
         "'kafka.password_env' names the environment variable NOT_SET_ANYWHERE, which is not set"),
        (lambda d: d.update(trigger={"processing_time": "often"}),
         "'trigger.processing_time' must be an interval such as '10 seconds', not 'often'."),
        (lambda d: d["kafka"].update(topic_pattern="fink_.*"),
         "Give exactly one of 'kafka.topics' (a list) or 'kafka.topic_pattern'."),
        (lambda d: d["kafka"].update(max_bytes_per_trigger="lots"),
         "'kafka.max_bytes_per_trigger' must be a size such as '500 MB' or '1 GiB', not 'lots'."),
        (lambda d: d["kafka"].update(max_bytes_per_trigger=0),
         "'kafka.max_bytes_per_trigger' must be a size such as '500 MB' or '1 GiB', not 0."),
        (lambda d: d.update(filters=[{"expression": "true", "table": "sn"}, {"preset": "sn_candidate", "table": "sn"}]),
         "filters[1].table 'sn' is named by filters[0] already: an alert goes to each table whose filter it passes"),
        (lambda d: d.update(filters=[{"expression": "true", "table": "quarantine"}]),
         "filters[0].table cannot be 'quarantine', a name the job's own tables have: choose another."),
        (lambda d: d.update(filters=[{"expression": "true", "table": "SN candidates"}]),
         "filters[0].table must be a table name of lower-case letters, digits and _, not 'SN candidates'."),
        (lambda d: d.update(filters=[{"expression": "true", "table": "sn"}]),  # the output is Parquet
         "filters name tables of their own ('table'): those are Iceberg tables, so the output's format must be iceberg"),
        (lambda d: d.update(filters=[{"expression": "true", "table": "sn"}], output={
            "table": {"path": "wh", "checkpoint": "chk", "deduplicate": "1 hour"}}),
         "Leave 'deduplicate' out (each table then holds an alert once per topic it came on)"),
    ],
)
def test_errors_name_the_field(change, message: str, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as error:
        parse_config(config_with(change), base=tmp_path)
    assert message in str(error.value)


def test_yaml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("survey: ztf\nkafka: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="Cannot read the configuration file"):
        load_config(tmp_path / "missing.yaml")


def test_a_broken_schema_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mine.avsc").write_text('{"type": "record", "name": "alert", "fields": [{"name": "candid"}]}')
    with pytest.raises(ConfigError) as error:
        parse_config(config_with(lambda d: d.update(schema="mine.avsc")), base=tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'mine.avsc'} is not a valid Avro schema (")
    assert str(error.value).endswith("fix it, or drop 'schema:' to use the topics' own writer schemas.")


def test_password_from_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    data = config_with(lambda d: (d["kafka"].pop("password_env"), d["kafka"].update(password_file=str(tmp_path / "pw"))))
    assert parse_config(data, base=tmp_path).kafka.password == Secret("from-file")


def test_skipping_lost_offsets_reads_each_kafka_partition_in_one_task(tmp_path: Path) -> None:
    failing = parse_config(VALID, base=tmp_path).kafka
    skipping = parse_config(config_with(lambda data: data["kafka"].update(on_data_loss="skip")), base=tmp_path).kafka
    alerts = stream_options(failing, "alerts", min_partitions=4)
    assert (alerts["minPartitions"], alerts["failOnDataLoss"], alerts["kafka.group.id"]) == ("4", "true", "g")
    deduplicated = stream_options(skipping, "deduplicated", min_partitions=4)
    assert (deduplicated["minPartitions"], deduplicated["failOnDataLoss"]) == ("1", "false")
    assert deduplicated["kafka.group.id"] == "g-deduplicated"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("500 MB", 500_000_000), ("1 GiB", 2**30), ("64kB", 64_000), (1_000_000, 1_000_000), ("2.5 GB", 2_500_000_000)],
)
def test_batch_bytes_take_units(setting: str | int, expected: int, tmp_path: Path) -> None:
    data = config_with(lambda d: d["kafka"].update(max_bytes_per_trigger=setting))
    assert parse_config(data, base=tmp_path).kafka.max_bytes_per_trigger == expected


def test_micro_batches_are_sized_by_the_bytes_of_the_newest_messages(tmp_path: Path) -> None:
    kafka = parse_config(VALID, base=tmp_path).kafka  # 500 MB by default
    ztf, lsst = [Message(b"{}", 50_000)] * 2, [Message(b"{}", 250_000), Message(None, 230_000)]
    assert records_per_batch(kafka, ztf) == 10_000
    assert records_per_batch(kafka, lsst) == 2083
    capped = parse_config(config_with(lambda d: d["kafka"].update(max_offsets_per_trigger=500)), base=tmp_path).kafka
    assert records_per_batch(capped, ztf) == 500
    assert stream_options(kafka, max_offsets=records_per_batch(kafka, ztf))["maxOffsetsPerTrigger"] == "10000"
    assert records_per_batch(kafka, []) is None and "maxOffsetsPerTrigger" not in stream_options(kafka)


def test_fink_client_credentials_fill_the_kafka_section(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """fink-client's saved registration (~/.finkclient/<survey>_credentials.yml) stands in for
    servers, username, password and group id; what the file names itself wins."""
    saved = tmp_path / "home" / ".finkclient" / "ztf_credentials.yml"
    saved.parent.mkdir(parents=True)
    saved.write_text("survey: ztf\nusername: fink_user\npassword: client-pw-77\nservers: kafka-ztf.example:24499\n"
                     "groupid: fink_user_spark\nmaxtimeout: 10\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kafka = {"credentials": "ztf", "topics": ["fink_sn_candidates_ztf"]}
    config = parse_config(config_with(lambda data: data.update(kafka=kafka)), base=tmp_path)
    assert (config.kafka.servers, config.kafka.username, config.kafka.group_id) == (
        "kafka-ztf.example:24499", "fink_user", "fink_user_spark")
    assert config.kafka.password == Secret("client-pw-77") and "client-pw-77" not in repr(config)
    own = parse_config(config_with(lambda data: data["kafka"].update(credentials="ztf")), base=tmp_path)
    assert (own.kafka.servers, own.kafka.username, own.kafka.password) == ("127.0.0.1:9092", "u", Secret("s3cret-pw"))
    with pytest.raises(ConfigError, match=r"'kafka.credentials' is 'lsst', but .*lsst_credentials.yml cannot be read"):
        parse_config(config_with(lambda data: data.update(kafka={**kafka, "credentials": "lsst"})), base=tmp_path)
