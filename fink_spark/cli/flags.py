"""The one-line commands' flags: a YAML file becomes optional.

Each flag stands for one key of the configuration file. The flags given are laid over
the file's mapping (or an empty one) before the one checker, `parse_config`, reads it:
flags win, and an error names the key the flag stands for.

    fink-spark stream --credentials ztf --topics fink_sn_candidates_ztf --output alerts/
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from fink_spark.config.job import FORMATS, JobConfig, KafkaConfig, parse_config, parse_source, read_config_file
from fink_spark.errors import ConfigError
from fink_spark.surveys import SURVEYS, Survey

CHECKPOINTS = "checkpoints"  # a new output's checkpoint: a folder inside it, hidden from Parquet readers by name

TOPIC_NAMING = """\
Fink's topics: livestream `fink_<filter>_<survey>` (e.g. fink_sn_candidates_ztf, one per
Fink filter, an alert once per filter it passes); Data Transfer `ftransfer_<survey>_<date>_<id>`
(a selection ordered on Fink's web site, its schema in `<topic>_schema`); cross-match
`fxmatch_*`. `fink-spark topics` lists those your credentials may read."""

TABLE_HELP = "the warehouse's table: alerts, or that of a filter that names one (filters: {..., table: NAME})"


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Where the alerts come from: a configuration file, fink-client's credentials, topics."""
    parser.add_argument("--config", help="a YAML configuration (see conf/); the flags below override its keys")
    parser.add_argument("--survey", choices=sorted(SURVEYS),
                        help="the alerts' survey (default: the file's, or the topics' suffix _ztf / _lsst)")
    parser.add_argument("--credentials", metavar="NAME",
                        help="fink-client's saved credentials: ztf (~/.finkclient/ztf_credentials.yml) or a .yml file")
    parser.add_argument("--servers", help="Kafka bootstrap servers (kafka.servers)")
    parser.add_argument("--group-id", help="Kafka group id (kafka.group_id)")
    parser.add_argument("--topics", help="comma-separated topics (kafka.topics)")
    parser.add_argument("--topic-pattern", help="a regex of topics, instead of --topics (kafka.topic_pattern)")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Where the kept alerts go, and which."""
    parser.add_argument("--output", metavar="PATH",
                        help=f"the warehouse (Iceberg) or folder (Parquet) of the output; its checkpoint defaults to "
                             f"PATH/{CHECKPOINTS} (output.table.path)")
    parser.add_argument("--checkpoint", help="the checkpoint folder (output.table.checkpoint)")
    parser.add_argument("--format", choices=FORMATS, help="iceberg (default) or parquet (output.format)")
    parser.add_argument("--partition-by", metavar="COLUMNS",
                        help="comma-separated, e.g. topic,night,finkclass (output.table.partition_by)")
    parser.add_argument("--filter", action="append", default=[], metavar="SQL",
                        help="keep alerts for which this Spark SQL condition holds; repeatable (filters)")


def add_start_flags(parser: argparse.ArgumentParser) -> None:
    """Where a live job begins, whether it ends, and what it prints."""
    parser.add_argument("--start-at", metavar="WHEN",
                        help="earliest, latest or a time (2026-11-28T20:00:00Z): where a new checkpoint starts "
                             "(kafka.starting_offsets)")
    parser.add_argument("--available-now", action="store_true",
                        help="consume what is there, then stop (trigger.available_now)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="stop after N alerts kept (the last micro-batch is kept whole) (trigger.limit)")
    parser.add_argument("--no-console", action="store_true", help="print no alerts (output.console.enabled: false)")


def config_from_flags(args: argparse.Namespace, kafka_required: bool = True, outputs_only: bool = False) -> JobConfig:
    """The configuration of a command: its file if given, with its flags laid over it."""
    data = flagged_config(args, kafka=not outputs_only)
    if "output" not in data:
        raise ConfigError("Where should the alerts go? Give --output PATH (or a configuration file with output:).")
    return parse_config(data, kafka_required=kafka_required and not outputs_only)


def source_config(args: argparse.Namespace) -> tuple[Survey | None, KafkaConfig]:
    """The survey (when known) and Kafka settings of a command that writes nothing (topics,
    discover)."""
    return parse_source(flagged_config(args, output=False, survey_required=False))


def flagged_config(args: argparse.Namespace, kafka: bool = True, output: bool = True,
                   survey_required: bool = True) -> dict[str, Any]:
    """The configuration mapping: the file's (or none), with the flags given laid over it
    (those of the Kafka section and of the output, as the command reads them)."""
    data = read_config_file(args.config) if _flag(args, "config") else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{args.config} must be a mapping of keys to values.")
    data = copy.deepcopy(data)
    if kafka:
        _lay_kafka(data, args)
    else:
        data.pop("kafka", None)
    if output:
        _lay_output(data, args)
        _lay_filters_and_trigger(data, args)
    survey = _flag(args, "survey") or data.get("survey") or _survey_of(data)
    if survey is None and survey_required:
        raise ConfigError("Which survey? Give --survey ztf or --survey lsst (or topics named ..._ztf / ..._lsst).")
    if survey is not None:
        data["survey"] = survey
    return data


def _flag(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def _lay_kafka(data: dict[str, Any], args: argparse.Namespace) -> None:
    given = {key: value for key, value in {
        "credentials": _flag(args, "credentials"), "servers": _flag(args, "servers"),
        "group_id": _flag(args, "group_id"), "starting_offsets": _flag(args, "start_at"),
    }.items() if value is not None}
    topics, pattern = _flag(args, "topics"), _flag(args, "topic_pattern")
    if topics is not None or pattern is not None:
        given["topics"] = [topic.strip() for topic in topics.split(",") if topic.strip()] if topics else None
        given["topic_pattern"] = pattern
    if given or "kafka" in data:
        kafka = data.setdefault("kafka", {}) or {}
        if not isinstance(kafka, dict):
            raise ConfigError("'kafka' must be a mapping of keys to values.")
        if "credentials" in given:  # what fink-client saved stands for these: the file's own would win over it
            for key in ("servers", "group_id", "username", "password", "password_env", "password_file"):
                kafka.pop(key, None)
        kafka.update(given)
        data["kafka"] = {key: value for key, value in kafka.items() if value is not None}


def _lay_output(data: dict[str, Any], args: argparse.Namespace) -> None:
    """--output, --checkpoint, --partition-by, --format and --no-console over `output`."""
    path, checkpoint = _flag(args, "output"), _flag(args, "checkpoint")
    output = data.get("output") or {}
    if not isinstance(output, dict):
        raise ConfigError("'output' must be a mapping of keys to values.")
    if path is not None or checkpoint is not None or "table" in output:
        table = output.setdefault("table", {}) or {}
        output["table"] = table
        if path is not None:
            table["path"] = path
            table["checkpoint"] = f"{path.rstrip('/')}/{CHECKPOINTS}"  # a checkpoint belongs to its output
        if checkpoint is not None:
            table["checkpoint"] = checkpoint
        if _flag(args, "partition_by"):
            table["partition_by"] = [column.strip() for column in args.partition_by.split(",") if column.strip()]
    elif _flag(args, "partition_by"):
        raise ConfigError("--partition-by needs --output (or a configuration file's output).")
    if _flag(args, "format"):
        output["format"] = args.format
    if _flag(args, "no_console"):
        output["console"] = {**(output.get("console") or {}), "enabled": False}
    if output:
        data["output"] = output


def _lay_filters_and_trigger(data: dict[str, Any], args: argparse.Namespace) -> None:
    """--filter (added to the file's filters), --available-now and --limit over `trigger`."""
    if _flag(args, "filter"):
        data["filters"] = list(data.get("filters") or []) + list(args.filter)
    trigger = {key: value for key, value in {
        "available_now": True if _flag(args, "available_now") else None, "limit": _flag(args, "limit"),
    }.items() if value is not None}
    if trigger:
        data["trigger"] = {**(data.get("trigger") or {}), **trigger}
        if "available_now" in trigger:
            data["trigger"].pop("processing_time", None)


def _survey_of(data: dict[str, Any]) -> str | None:
    """The survey the topics' names end with, or fink-client's credentials are named after."""
    kafka = data.get("kafka") or {}
    names = kafka.get("topics") or []
    names = [names] if isinstance(names, str) else names
    suffixes = {name.rsplit("_", 1)[-1] for name in names}
    if len(suffixes) == 1 and (only := suffixes.pop()) in SURVEYS:
        return only
    credentials = kafka.get("credentials")
    return credentials if credentials in SURVEYS else None
