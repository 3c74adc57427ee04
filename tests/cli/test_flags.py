"""The one-line commands: flags alone, or laid over a file, make the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fink_spark.cli import main as cli
from fink_spark.kafka.positions import behind, lag_line

CREDENTIALS = "username: fink_user\npassword: client-pw-77\nservers: kafka-ztf.example:24499\ngroupid: fink_user_spark\n"


def effective(capsys, *flags: str) -> dict:  # noqa: ANN001
    """What `fink-spark config` prints for these flags, read back as YAML."""
    cli(["config", *flags])
    return yaml.safe_load(capsys.readouterr().out)


def failure(capsys, *flags: str) -> str:  # noqa: ANN001
    with pytest.raises(SystemExit) as stopped:
        cli(["config", *flags])
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    saved = tmp_path / "ztf_credentials.yml"
    saved.write_text(CREDENTIALS)
    return saved


def test_flags_alone_make_a_job(capsys, credentials: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    printed = effective(capsys, "--credentials", str(credentials), "--topics", "fink_sn_candidates_ztf,fink_kn_candidates_ztf",
                        "--output", "alerts/")
    assert printed["survey"] == "ztf"  # from the topics' names
    assert printed["kafka"] == {
        "servers": "kafka-ztf.example:24499", "topics": ["fink_sn_candidates_ztf", "fink_kn_candidates_ztf"],
        "username": "fink_user", "password": "***", "group_id": "fink_user_spark", "starting_offsets": "earliest",
        "max_bytes_per_trigger": 500_000_000, "on_data_loss": "fail",
    }
    assert printed["output"]["format"] == "iceberg"
    assert printed["output"]["table"]["path"] == str(tmp_path / "alerts")
    assert printed["output"]["table"]["checkpoint"] == str(tmp_path / "alerts" / "checkpoints")
    assert printed["trigger"] == {"processing_time": "10 seconds", "available_now": False}


def test_flags_win_over_the_file(capsys, credentials: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FILE_PASSWORD", "file-pw-1")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "survey": "ztf",
        "kafka": {"servers": "file:9092", "username": "file_user", "password_env": "FILE_PASSWORD",
                  "topics": ["fink_sn_candidates_ztf"], "starting_offsets": "latest"},
        "output": {"table": {"path": str(tmp_path / "a"), "checkpoint": str(tmp_path / "a_chk")}},
        "filters": ["candidate.magpsf < 19"],
    }))
    kept = effective(capsys, "--config", str(job))
    assert (kept["kafka"]["servers"], kept["kafka"]["username"]) == ("file:9092", "file_user")
    printed = effective(capsys, "--config", str(job), "--credentials", str(credentials), "--topic-pattern", "fink_.*_ztf",
                        "--start-at", "2026-11-28T20:00:00Z", "--output", str(tmp_path / "b"), "--format", "parquet",
                        "--filter", "candidate.rb > 0.5", "--limit", "1000", "--available-now", "--no-console")
    assert (printed["kafka"]["servers"], printed["kafka"]["username"]) == ("kafka-ztf.example:24499", "fink_user")
    assert printed["kafka"]["topic_pattern"] == "fink_.*_ztf" and "topics" not in printed["kafka"]
    assert printed["kafka"]["starting_offsets"] == "2026-11-28T20:00:00Z"
    assert printed["output"]["format"] == "parquet"
    assert printed["output"]["table"]["checkpoint"] == str(tmp_path / "b" / "checkpoints")  # the new output's own
    assert printed["output"]["console"]["enabled"] is False
    assert printed["filters"] == ["candidate.magpsf < 19", "candidate.rb > 0.5"]
    assert printed["trigger"] == {"available_now": True, "limit": 1000}
    out = capsys.readouterr()
    assert "client-pw-77" not in out.out + out.err and "file-pw-1" not in out.out + out.err


@pytest.mark.parametrize(("flags", "message"), [
    (["--topics", "fink_sn_candidates_ztf", "--servers", "h:1"],
     "fink-spark: Where should the alerts go? Give --output PATH (or a configuration file with output:)."),
    (["--topics", "my_topic", "--servers", "h:1", "--output", "o"],
     "fink-spark: Which survey? Give --survey ztf or --survey lsst (or topics named ..._ztf / ..._lsst)."),
    (["--topics", "t_ztf", "--servers", "h:1", "--output", "o", "--start-at", "yesterday"],
     "fink-spark: 'kafka.starting_offsets' must be 'earliest', 'latest' or a time such as 2026-11-28T20:00:00Z, "
     "not 'yesterday'."),
    (["--topics", "t_ztf", "--servers", "h:1", "--output", "o", "--limit", "0"],
     "fink-spark: 'trigger.limit' must be a positive number of alerts, not 0."),
    (["--topics", "t_ztf", "--servers", "h:1", "--output", "o", "--partition-by", "topic,colour"],
     "fink-spark: 'output.table.partition_by' may list only"),
])
def test_flag_errors_say_what_to_give(capsys, flags: list[str], message: str) -> None:  # noqa: ANN001
    assert failure(capsys, *flags).startswith(message)


def test_lag_is_end_offsets_minus_offsets_read_and_the_eta_follows_the_rate() -> None:
    read = {"a_ztf": {0: 10, 1: 5}, "b_ztf": {0: 7}}
    ends = {"a_ztf": {0: 110, 1: 5}, "b_ztf": {0: 7}, "c_ztf": {0: 30}}  # c: not read yet, from offset 0
    assert behind(read, ends) == {"a_ztf": 100, "b_ztf": 0, "c_ztf": 30}
    assert lag_line(read, ends, 13.0) == "behind: a_ztf 100, b_ztf 0, c_ztf 30; caught up in about 10 s at 13 alerts/s"
    assert lag_line(read, {"a_ztf": {0: 10, 1: 5}}, 13.0) == "behind: a_ztf 0; caught up"
    assert lag_line(read, ends, 0.01).endswith("caught up in about 3.6 h at 0 alerts/s")


def test_fink_client_credentials_bring_the_topics_subscribed_to(capsys, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """`finkctl topic subscribe` keeps the topics with the credentials: `--credentials ztf`
    alone then reads them, as `finkctl stream -survey ztf` does."""
    saved = tmp_path / "home" / ".finkclient" / "ztf_credentials.yml"
    saved.parent.mkdir(parents=True)
    saved.write_text(CREDENTIALS + "topics:\n  fink_sn_candidates_ztf: {}\n  fink_kn_candidates_ztf: {telegram: {}}\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    printed = effective(capsys, "--credentials", "ztf", "--output", str(tmp_path / "alerts"))
    assert printed["survey"] == "ztf"
    assert printed["kafka"]["topics"] == ["fink_sn_candidates_ztf", "fink_kn_candidates_ztf"]
    assert effective(capsys, "--credentials", "ztf", "--topics", "fink_early_sn_candidates_ztf",
                     "--output", "o")["kafka"]["topics"] == ["fink_early_sn_candidates_ztf"]


def test_partitions_by_class_where_the_survey_has_one(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    flags = ["--servers", "h:1", "--output", str(tmp_path / "o"), "--partition-by", "topic,night,finkclass"]
    assert effective(capsys, "--topics", "t_ztf", *flags)["output"]["table"]["partition_by"] == ["topic", "night", "finkclass"]
    assert "may list only ['night', 'topic'] with output.format iceberg, not ['finkclass']" in failure(
        capsys, "--topics", "t_lsst", *flags)


def test_offsets_read_from_spark_json_and_from_pyspark_progress_text() -> None:
    from fink_spark.kafka.positions import spark_offsets

    expected = {"fink_kn_ztf": {0: 12}, "fink_sn_ztf": {0: 12, 1: 0}}
    assert spark_offsets('{"fink_kn_ztf":{"0":12},"fink_sn_ztf":{"0":12,"1":0}}') == expected
    assert spark_offsets("{'fink_kn_ztf': {'0': 12}, 'fink_sn_ztf': {'0': 12, '1': 0}}") == expected


def test_reprocess_from_flags_alone(spark, tmp_path: Path) -> None:  # noqa: ANN001
    """`fink-spark reprocess --survey ztf --input <avro files> --output <folder>`, no YAML: every
    alert of the files lands in the table once."""
    import argparse

    from conftest import read_table, sample
    from reference import read_alerts

    from fink_spark.cli.commands import add_reprocess_arguments
    from fink_spark.cli.flags import config_from_flags
    from fink_spark.run.reprocess import reprocess

    parser = argparse.ArgumentParser()
    add_reprocess_arguments(parser)
    args = parser.parse_args(["--survey", "ztf", "--input", str(sample("ztf-2026")), "--output", str(tmp_path / "alerts")])
    config = config_from_flags(args, kafka_required=False)
    assert config.output.checkpoint == str(tmp_path / "alerts" / "checkpoints")
    assert reprocess(spark, config, args.input, [], args.topic) == 31
    kept = read_table(tmp_path / "alerts", ["candid"]).column("candid").to_pylist()
    assert sorted(kept) == sorted(alert["candid"] for alert in read_alerts(sample("ztf-2026")))
