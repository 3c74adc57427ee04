"""The job's configuration: a typed, frozen object loaded from YAML and checked before Spark starts.

Every error names the key at fault (`kafka.servers`, `output.table.path`, ...).
The Kafka password never has to be in the file: it can come from an environment
variable or a file, and it is kept in a `Secret` that never prints.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from fink_spark.errors import ConfigError
from fink_spark.schema.writer import load_schema_text
from fink_spark.sections import Section
from fink_spark.surveys import SURVEYS, Survey, get_survey
from fink_spark.transform.filters import Filter, parse_filters, tables_of


class Secret:
    """A password that shows as *** wherever it is printed, logged or repr'd."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# A micro-batch of about 500 MB: 10,000 ZTF or 2,200 LSST alerts. The job streams each batch
# through (no batch is held in memory), so this bounds the work between two checkpoints,
# not the heap; larger batches amortise each batch's fixed cost.
DEFAULT_BATCH_BYTES = 500_000_000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_UNITS = {None: 1, "B": 1, "kB": 10**3, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


@dataclass(frozen=True)
class KafkaConfig:
    servers: str
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    username: str | None = None
    password: Secret | None = None
    group_id: str | None = None
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    max_bytes_per_trigger: int = DEFAULT_BATCH_BYTES
    on_data_loss: str = "fail"
    ssl_ca: str | None = None

    @property
    def start_time(self) -> datetime | None:
        """The time a new checkpoint starts at, when `starting_offsets` is one."""
        return None if self.starting_offsets in STARTS else parse_time(self.starting_offsets)

    @property
    def security_protocol(self) -> str:
        """SASL_SSL / SASL_PLAINTEXT with credentials, SSL / PLAINTEXT without, TLS when a CA is given."""
        return ("SASL_" if self.username else "") + ("SSL" if self.ssl_ca else "PLAINTEXT")


STARTS = ("earliest", "latest")


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), or None if the text is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


ICEBERG, PARQUET = "iceberg", "parquet"
FORMATS = (ICEBERG, PARQUET)
ICEBERG_PARTITIONS = ("topic", "night")


@dataclass(frozen=True)
class TableOutput:
    """Where the kept alerts go. Iceberg (the default): `path` is a warehouse folder holding
    the catalog (one SQLite file) and the tables `<survey>.alerts`, `<survey>.quarantine` and,
    when asked, `<survey>.rejected`; or `catalog` names a Spark catalog configured outside
    (REST, Hive, ...). Parquet: `path` is the alerts' folder, with the quarantine beside it."""

    path: str
    checkpoint: str
    partition_by: tuple[str, ...] = ("topic", "year", "month", "day")
    quarantine_path: str | None = None
    rejected_path: str | None = None
    deduplicate_gap: str | None = None
    compression: str = "zstd"
    format: str = ICEBERG
    catalog: str | None = None
    namespace: str | None = None
    keep_rejected: bool = False

    @property
    def quarantine(self) -> str:
        """Where undecodable messages go (Parquet): next to the alerts unless configured."""
        return self.quarantine_path or self.path.rstrip("/") + "_quarantine"

    @property
    def schema_folder(self) -> str | None:
        """Where readers of the output need the table's schema beside its files: a Parquet
        folder's (an Iceberg table holds its own schema)."""
        return self.path if self.format == PARQUET else None

    @property
    def rejected(self) -> bool:
        """Whether the ids the filters rejected are kept."""
        return self.keep_rejected or self.rejected_path is not None


@dataclass(frozen=True)
class ConsoleOutput:
    enabled: bool = True
    rows: int = 20


@dataclass(frozen=True)
class TriggerConfig:
    """When micro-batches start, and when the job stops: never, once the topics are read
    (`available_now`), or once `limit` alerts are kept."""

    processing_time: str | None = "10 seconds"
    available_now: bool = False
    limit: int | None = None

    def spark_options(self) -> dict[str, Any]:
        """The keyword arguments of Spark's `DataStreamWriter.trigger`."""
        return {"availableNow": True} if self.available_now else {"processingTime": self.processing_time}


@dataclass(frozen=True)
class JobConfig:
    survey: Survey
    kafka: KafkaConfig | None
    output: TableOutput
    console: ConsoleOutput = field(default_factory=ConsoleOutput)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    schema: str | None = None
    filters: tuple[Filter, ...] = ()


def file_keys(section: type, renamed: dict[str, str] | None = None, besides: tuple[str, ...] = (),
              elsewhere: tuple[str, ...] = ()) -> dict[str, str | None]:
    """A section's keys in the file, each with the field of `section` it fills: every field
    under its own name or its `renamed` one, except those set `elsewhere` in the file; the
    keys `besides` fill no field of their own (they are read into another one)."""
    keys: dict[str, str | None] = {(renamed or {}).get(item.name, item.name): item.name
                                   for item in fields(section) if item.name not in elsewhere}
    return {**keys, **dict.fromkeys(besides)}


# What each section of the file may hold: the parser's known keys and `effective_config`'s
ROOT_KEYS = ("survey", "kafka", "schema", "output", "trigger", "filters")
KAFKA_KEYS = file_keys(KafkaConfig, besides=("password_env", "password_file", "credentials"))
OUTPUT_KEYS = ("table", "format", "console")
TABLE_KEYS = file_keys(TableOutput, renamed={"deduplicate_gap": "deduplicate", "keep_rejected": "rejected"},
                       elsewhere=("format",))
ONLY_FOR_FORMAT = {ICEBERG: ("catalog", "namespace", "rejected"), PARQUET: ("quarantine_path", "rejected_path")}
CONSOLE_KEYS = file_keys(ConsoleOutput)
TRIGGER_KEYS = file_keys(TriggerConfig)


# zstd: measured about twice as fast as snappy on alerts (cutouts are gzipped FITS, which
# snappy spends time on for nothing), and smaller.
CODECS = ("zstd", "lz4_raw", "snappy", "gzip", "uncompressed")
_INTERVAL = re.compile(r"^\s*\d+(\.\d+)?\s*(ms|millisecond|second|minute|hour)s?\s*$", re.I)


def _password(kafka: Section, base: Path) -> Secret | None:
    """The password from `password`, `password_env` or `password_file`, at most one of them."""
    given = [key for key in ("password", "password_env", "password_file") if kafka.data.get(key)]
    if len(given) > 1:
        raise ConfigError(f"Give only one of kafka.{', kafka.'.join(given)}.")
    if not given:
        return None
    key = given[0]
    value = kafka.get(key, str)
    if key == "password":
        return Secret(value)
    if key == "password_env":
        if value not in os.environ:
            raise ConfigError(
                f"'kafka.password_env' names the environment variable {value}, which is not set: "
                f"export {value}=<your Fink password> before running the job."
            )
        return Secret(os.environ[value])
    path = Path(_resolve(str(Path(value).expanduser()), base))
    try:
        return Secret(path.read_text().strip())
    except OSError as error:
        raise ConfigError(
            f"'kafka.password_file' is {value}, which cannot be read: {error.strerror}."
        ) from error


def fink_client_credentials(name: str | None) -> dict[str, Any]:
    """What fink-client saved with `fink_client_register`: `~/.finkclient/<name>_credentials.yml`
    (name: a survey, e.g. ztf), or the YAML file `name` names; {} when no name is given."""
    if not name:
        return {}
    path = Path(name).expanduser() if name.endswith((".yml", ".yaml")) else Path.home() / ".finkclient" / f"{name}_credentials.yml"
    try:
        saved = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(
            f"'kafka.credentials' is {name!r}, but {path} cannot be read ({error.strerror}): register with "
            f"fink-client first (fink_client_register ...), or give kafka.servers and kafka.username instead."
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} (kafka.credentials) is not valid YAML: {error}") from error
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} (kafka.credentials) does not hold fink-client's credentials.")
    return saved


def _kafka(root: Section, base: Path, required: bool, topics_required: bool = True) -> KafkaConfig | None:
    kafka = root.section("kafka", set(KAFKA_KEYS))
    if "kafka" not in root.data:
        if not required:
            return None
        raise ConfigError("Missing required key 'kafka'.")
    saved = fink_client_credentials(kafka.get("credentials", str))
    servers = kafka.get("servers", (str, list), default=saved.get("servers"))
    if not servers:
        raise ConfigError("Missing required key 'kafka.servers' (or 'kafka.credentials', naming fink-client's).")
    if isinstance(servers, list):
        servers = ",".join(str(server) for server in servers)
    pattern = kafka.get("topic_pattern", str)
    # fink-client keeps the topics subscribed to (finkctl topic subscribe) with the credentials
    subscribed = list(saved.get("topics") or []) if not pattern else []
    topics = kafka.get("topics", (list, str), default=subscribed)
    topics = [topics] if isinstance(topics, str) else topics
    if not all(isinstance(topic, str) and topic for topic in topics):
        raise ConfigError("'kafka.topics' must be a list of topic names.")
    if (topics_required or topics or pattern) and bool(topics) == bool(pattern):
        raise ConfigError("Give exactly one of 'kafka.topics' (a list) or 'kafka.topic_pattern'.")
    if pattern:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"'kafka.topic_pattern' is not a valid regex: {error}.") from error
    starting = kafka.get("starting_offsets", str, default="earliest")
    if starting not in STARTS and parse_time(starting) is None:
        raise ConfigError(
            f"'kafka.starting_offsets' must be 'earliest', 'latest' or a time such as 2026-11-28T20:00:00Z, "
            f"not {starting!r}."
        )
    on_data_loss = kafka.get("on_data_loss", str, default="fail")
    if on_data_loss not in ("fail", "skip"):
        raise ConfigError(f"'kafka.on_data_loss' must be 'fail' or 'skip', not {on_data_loss!r}.")
    max_offsets = kafka.get("max_offsets_per_trigger", int)
    if max_offsets is not None and max_offsets <= 0:
        raise ConfigError("'kafka.max_offsets_per_trigger' must be a positive number.")
    max_bytes = _size(kafka.get("max_bytes_per_trigger", (str, int), default=DEFAULT_BATCH_BYTES),
                      "kafka.max_bytes_per_trigger")
    username = kafka.get("username", str)
    password = _password(kafka, base)
    if not username and not password and saved.get("username"):
        username, password = str(saved["username"]), Secret(str(saved.get("password") or ""))
    if bool(username) != bool(password):
        raise ConfigError(
            "Give both 'kafka.username' and a password ('kafka.password_env', "
            "'kafka.password_file' or 'kafka.password'), or neither."
        )
    return KafkaConfig(
        servers=servers,
        topics=tuple(topics),
        topic_pattern=pattern,
        username=username,
        password=password,
        group_id=kafka.get("group_id", str, default=saved.get("groupid") or saved.get("group_id")),
        starting_offsets=starting,
        max_offsets_per_trigger=max_offsets,
        max_bytes_per_trigger=max_bytes,
        on_data_loss=on_data_loss,
        ssl_ca=_ssl_ca(kafka, base),
    )


def _size(value: str | int, name: str) -> int:
    """A size in bytes from a number or a string such as '500 MB' or '1 GiB'."""
    match = _SIZE.match(str(value))
    size = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    if size <= 0:
        raise ConfigError(f"{name!r} must be a size such as '500 MB' or '1 GiB', not {value!r}.")
    return size


def _ssl_ca(kafka: Section, base: Path) -> str | None:
    """The CA certificate(s) (PEM) that signed the brokers' certificates: TLS to the brokers."""
    value = kafka.get("ssl_ca", str)
    if value is None:
        return None
    path = Path(_resolve(str(Path(value).expanduser()), base))
    if not path.is_file():
        raise ConfigError(f"'kafka.ssl_ca' names {path}, which is not a file (a PEM CA certificate).")
    return str(path)


def _outputs(root: Section, base: Path, survey: Survey) -> tuple[TableOutput, ConsoleOutput]:
    output = root.section("output", set(OUTPUT_KEYS))
    if "output" not in root.data:
        raise ConfigError("Missing required key 'output'.")
    table_format = output.get("format", str, default=ICEBERG)
    if table_format not in FORMATS:
        raise ConfigError(f"'output.format' must be one of {', '.join(FORMATS)}, not {table_format!r}.")
    section = output.section("table", set(TABLE_KEYS))
    if "table" not in output.data:
        raise ConfigError("Missing required key 'output.table' (path and checkpoint of the output).")
    key = "output.table"
    iceberg = table_format == ICEBERG
    allowed = {*(ICEBERG_PARTITIONS if iceberg else ("topic", "year", "month", "day")), *survey.class_partitions}
    partition_by = section.get("partition_by", list, default=list(ICEBERG_PARTITIONS) if iceberg else
                               ["topic", "year", "month", "day"])
    unknown = [column for column in partition_by if column not in allowed]
    if unknown:
        raise ConfigError(f"'{key}.partition_by' may list only {sorted(allowed)} with output.format "
                          f"{table_format}, not {unknown}.")
    other_format = PARQUET if iceberg else ICEBERG
    wrong_format = [option for option in ONLY_FOR_FORMAT[other_format] if section.data.get(option) is not None]
    if wrong_format:
        hint = ("Iceberg keeps the quarantine and the rejected ids as tables of the same catalog (set "
                f"'{key}.rejected: true' for the latter)" if iceberg else "they name Iceberg tables")
        raise ConfigError(f"'{key}.{wrong_format[0]}' does not apply to output.format {table_format}: {hint}.")
    console = output.section("console", set(CONSOLE_KEYS))
    rows = console.get("rows", int, default=20)
    if rows <= 0:
        raise ConfigError("'output.console.rows' must be a positive number.")
    compression = section.get("compression", str, default="zstd")
    if compression not in CODECS:
        raise ConfigError(f"'{key}.compression' must be one of {', '.join(CODECS)}, not {compression!r}.")
    quarantine = section.get("quarantine_path", str)
    rejected = section.get("rejected_path", str)
    gap = section.get("deduplicate", str)
    if gap and not _INTERVAL.match(gap):
        raise ConfigError(f"'{key}.deduplicate' must be an interval such as '1 minute', not {gap!r}.")
    if gap and "topic" in partition_by:
        partition_by = [column for column in partition_by if column != "topic"]
    catalog = section.get("catalog", str)
    path = section.get("path", str, required=catalog is None)
    return (
        TableOutput(
            path=_resolve(path, base) if path else "",
            checkpoint=_resolve(section.get("checkpoint", str, required=True), base),
            partition_by=tuple(partition_by),
            quarantine_path=_resolve(quarantine, base) if quarantine else None,
            rejected_path=_resolve(rejected, base) if rejected else None,
            deduplicate_gap=gap,
            compression=compression,
            format=table_format,
            catalog=catalog,
            namespace=section.get("namespace", str),
            keep_rejected=section.get("rejected", bool, default=False),
        ),
        ConsoleOutput(enabled=console.get("enabled", bool, default=True), rows=rows),
    )


def _trigger(root: Section) -> TriggerConfig:
    trigger = root.section("trigger", set(TRIGGER_KEYS))
    limit = trigger.get("limit", int)
    if limit is not None and limit <= 0:
        raise ConfigError(f"'trigger.limit' must be a positive number of alerts, not {limit}.")
    available_now = trigger.get("available_now", bool, default=False)
    interval = trigger.get("processing_time", str)
    if available_now and interval:
        raise ConfigError("Give either 'trigger.available_now' or 'trigger.processing_time', not both.")
    if interval and not _INTERVAL.match(interval):
        raise ConfigError(
            f"'trigger.processing_time' must be an interval such as '10 seconds', not {interval!r}."
        )
    if available_now:
        return TriggerConfig(processing_time=None, available_now=True, limit=limit)
    return TriggerConfig(processing_time=interval or "10 seconds", limit=limit)


def _resolve(path: str, base: Path) -> str:
    """Relative local paths are taken from `base` (the folder the job runs in); URIs stay as they are."""
    if "://" in path or path.startswith("/"):
        return path
    return str((base / path).resolve())


def parse_config(data: Any, base: Path | None = None, kafka_required: bool = True) -> JobConfig:
    """Check a configuration mapping and build the typed configuration.

    Relative paths in it are taken from `base`, by default the current folder. Only
    reprocessing files may leave out the `kafka` section (`kafka_required=False`).
    """
    base = base or Path.cwd()
    root = Section(data, "", set(ROOT_KEYS))
    survey_name = root.get("survey", str, required=True)
    if survey_name not in SURVEYS:
        raise ConfigError(
            f"'survey' is {survey_name!r}; it must be one of {', '.join(sorted(SURVEYS))}."
        )
    schema = root.get("schema", str)
    if schema is not None:
        schema = _resolve(schema, base)
        if not Path(schema).is_file():
            raise ConfigError(f"'schema' names {schema}, which is not a file.")
        load_schema_text(schema)  # a broken file is an error now, before Spark starts
    output, console = _outputs(root, base, get_survey(survey_name))
    filters = parse_filters(root.data.get("filters"), get_survey(survey_name), base)
    if tables_of(filters) and output.format != ICEBERG:
        raise ConfigError("filters name tables of their own ('table'): those are Iceberg tables, so the output's "
                          "format must be iceberg; or leave 'table' out and keep the alerts that pass all the filters.")
    if tables_of(filters) and output.deduplicate_gap:
        raise ConfigError("filters name tables of their own ('table') and the output merges copies ('deduplicate'): "
                          "fink-spark does not do both yet. Leave 'deduplicate' out (each table then holds an alert "
                          "once per topic it came on) or 'table'.")
    return JobConfig(
        survey=get_survey(survey_name),
        kafka=_kafka(root, base, kafka_required),
        output=output,
        console=console,
        trigger=_trigger(root),
        schema=schema,
        filters=filters,
    )


def parse_source(data: Any, base: Path | None = None) -> tuple[Survey | None, KafkaConfig]:
    """The survey (if given) and the Kafka section alone, for commands that write nothing
    (discover, topics): the rest of the mapping is left unchecked, topics may be left out."""
    if not isinstance(data, dict):
        raise ConfigError("the file must be a mapping of keys to values.")
    root = Section({key: data.get(key) for key in ("survey", "kafka") if key in data}, "", {"survey", "kafka"})
    survey_name = root.get("survey", str)
    if survey_name is not None and survey_name not in SURVEYS:
        raise ConfigError(f"'survey' is {survey_name!r}; it must be one of {', '.join(sorted(SURVEYS))}.")
    kafka = _kafka(root, base or Path.cwd(), required=True, topics_required=False)
    return (get_survey(survey_name) if survey_name else None), kafka  # type: ignore[return-value]


def read_config_file(path: str | Path) -> Any:
    """A YAML configuration file's mapping, unchecked (`parse_config` checks it)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"Cannot read the configuration file {path}: {error.strerror}.") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error


def load_config(path: str | Path, kafka_required: bool = True, outputs_only: bool = False) -> JobConfig:
    """Load and check a YAML configuration file (`outputs_only`: its Kafka section left unread,
    for commands that only look at the outputs and need no password)."""
    data = read_config_file(path)
    if outputs_only and isinstance(data, dict):
        data = {key: value for key, value in data.items() if key != "kafka"}
    return parse_config(data, kafka_required=kafka_required and not outputs_only)


def effective_config(config: JobConfig) -> dict[str, Any]:
    """The configuration as the job runs it, defaults included, in the file's keys; the
    password shows as ***."""
    output = config.output
    other_format = PARQUET if output.format == ICEBERG else ICEBERG
    table = {key: value for key, value in _as_written(output, TABLE_KEYS).items() if key not in ONLY_FOR_FORMAT[other_format]}
    if output.format == PARQUET:
        table["quarantine_path"] = output.quarantine
    data: dict[str, Any] = {"survey": config.survey.name}
    if config.kafka is not None:
        data["kafka"] = {**_as_written(config.kafka, KAFKA_KEYS), "password": "***" if config.kafka.password else None}
    data["schema"] = config.schema
    data["output"] = {"format": output.format, "table": table, "console": _as_written(config.console, CONSOLE_KEYS)}
    data["trigger"] = _as_written(config.trigger, TRIGGER_KEYS)
    # as run: presets as their SQL; a watchlist by its catalog, then its condition on the columns it adds; a
    # Python function by its path
    data["filters"] = [(item.condition if item.prepare is None else item.label if item.scratch else f"{item.label}: {item.condition}")
                       + ("" if item.table is None else f" -> table {item.table}") for item in config.filters]
    return _plain(data)


def _as_written(section: object, keys: dict[str, str | None]) -> dict[str, Any]:
    """A section's values under their file keys."""
    return {key: getattr(section, name) for key, name in keys.items() if name is not None}


def _plain(value: Any) -> Any:
    """As YAML writes it: lists, and no keys without a value (nor empty lists)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item is not None and item != [] and item != ()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
