"""Where a job stands against its topics: how many alerts it is behind, and when it will
have caught up (`fink-spark status`, `fink-spark topics`, and each micro-batch's line).

The lag of a partition is its end offset minus the next offset the job will read; the
alerts behind a topic are the sum over its partitions.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from fink_spark.config.job import KafkaConfig
from fink_spark.display import format_table
from fink_spark.kafka.client import messages_at, readable_topics, subscribed_partitions, watermarks

Offsets = dict[str, dict[int, int]]  # topic -> partition -> offset


def behind(read: Offsets, ends: Offsets) -> dict[str, int]:
    """Alerts behind, per topic: the end offsets minus the offsets read (a partition not read
    yet counts from its first offset, given in `read` by the caller when known)."""
    return {topic: sum(max(0, end - read.get(topic, {}).get(partition, 0)) for partition, end in parts.items())
            for topic, parts in ends.items()}


def spark_offsets(text: str | None) -> Offsets:
    """Offsets as Spark's Kafka source gives them in its checkpoint and progress: JSON, or,
    in the progress pyspark parses, the text of the Python dict it made of that JSON."""
    if not text or text == "None":
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = ast.literal_eval(text)
    if not isinstance(parsed, dict):
        return {}
    return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in parsed.items()}


def lag_line(read: Offsets, ends: Offsets, records_per_second: float) -> str:
    """'behind: topic 1,200, other 0; caught up in about 2 min' (the ETA at this rate)."""
    per_topic = behind(read, ends)
    total = sum(per_topic.values())
    text = "behind: " + ", ".join(f"{topic} {count:,}" for topic, count in sorted(per_topic.items()))
    if total == 0:
        return text + "; caught up"
    if records_per_second <= 0:
        return text
    return text + f"; caught up in about {duration(total / records_per_second)} at {records_per_second:,.0f} alerts/s"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    committed: int | None  # the next offset the checkpoint reads; None: not read yet
    first: int
    end: int
    oldest_unread: datetime | None

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed if self.committed is not None else self.first))


def status(kafka: KafkaConfig, committed: Offsets) -> list[PartitionStatus]:
    """Each subscribed partition: the checkpoint's position, the end offset, the lag, and the
    time of the oldest alert not read yet (its Kafka timestamp)."""
    partitions = subscribed_partitions(kafka)
    marks = watermarks(kafka, partitions)
    next_read = {topic: {p: max(committed.get(topic, {}).get(p, low), low) for p, (low, _) in parts.items()}
                 for topic, parts in marks.items()}
    unread = {topic: {p: offset for p, offset in parts.items() if offset < marks[topic][p][1]}
              for topic, parts in next_read.items()}
    times = {(m.topic, m.partition): m.timestamp_ms for m in messages_at(kafka, unread) if m.timestamp_ms is not None}
    return [
        PartitionStatus(topic, p, committed.get(topic, {}).get(p), low, end,
                        datetime.fromtimestamp(times[(topic, p)] / 1000, timezone.utc) if (topic, p) in times else None)
        for topic, parts in sorted(marks.items()) for p, (low, end) in sorted(parts.items())
    ]


def status_table(rows: list[PartitionStatus]) -> list[str]:
    cells = [[row.topic, str(row.partition), "-" if row.committed is None else f"{row.committed:,}", f"{row.end:,}",
              f"{row.lag:,}", row.oldest_unread.strftime("%Y-%m-%d %H:%M:%S UTC") if row.oldest_unread else "-"]
             for row in rows]
    return format_table(["topic", "partition", "checkpoint at", "end offset", "lag", "oldest unread alert"], cells)


def topics_table(kafka: KafkaConfig) -> list[str]:
    """The topics these credentials may read, with partitions, end offsets and alerts held."""
    topics = readable_topics(kafka)
    marks = watermarks(kafka, topics)
    cells = [[topic, str(count), f"{sum(end for _, end in marks[topic].values()):,}",
              f"{sum(end - low for low, end in marks[topic].values()):,}"]
             for topic, count in sorted(topics.items())]
    return format_table(["topic", "partitions", "end offsets (sum)", "alerts held"], cells)
