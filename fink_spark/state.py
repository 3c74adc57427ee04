"""Small files the job keeps beside its checkpoint (schemas met, skipped offsets), on any
storage the checkpoint can be on: a local path, HDFS or S3 (through pyarrow's file systems)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from pyarrow import fs

# The queries' folders in a job's checkpoint: the live stream's, reprocessing's, a Parquet
# table's de-duplication; each `fink-spark audit --repair` has its own, repair-<n>
STREAM_QUERY, REPROCESS_QUERY, DEDUPLICATION_QUERY, REPAIR_QUERY = "alerts", "reprocess", "deduplicated", "repair"
# The job's own files in its checkpoint folder, beside Spark's checkpoints
STATE_FOLDER = "fink_spark"
TABLE_SCHEMA = f"{STATE_FOLDER}/table_schema.json"  # the table's schema and its history
WRITER_SCHEMAS = f"{STATE_FOLDER}/fink_spark_writer_schemas.json"  # the writer schemas met, by key
SKIPPED_OFFSETS = f"{STATE_FOLDER}/skipped_offsets.json"  # offsets deleted by the broker before the job read them
PENDING_QUARANTINE = f"{STATE_FOLDER}/quarantine_pending"  # quarantined positions of batches whose quarantine is not written yet
LEDGER = f"{STATE_FOLDER}/ledger"  # what each micro-batch read and kept (fink_spark.run.ledger)
# ... and in the output folder, hidden from Spark's readers
OUTPUT_TABLE_SCHEMA = "_fink_spark/table_schema.json"
SINK_LOG = "_spark_metadata"  # Spark's file sink: the files committed, batch by batch


def sink_log_batches(names: Iterable[str]) -> dict[int, str]:
    """Batch id -> file name in a sink log (`<batch>`, or `<batch>.compact`, which every
    tenth batch writes with all the files so far); checksums and temporary files left out."""
    batches = {}
    for name in names:
        batch, _, suffix = name.partition(".")
        if batch.isdigit() and suffix in ("", "compact"):
            batches[int(batch)] = name
    return batches


@dataclass(frozen=True)
class CheckpointFiles:
    """Text files under a checkpoint folder (a local path or a URI)."""

    filesystem: fs.FileSystem
    root: str

    @classmethod
    def at(cls, location: str) -> CheckpointFiles:
        uri = location.replace("s3a://", "s3://", 1).removeprefix("file://")
        filesystem, root = fs.FileSystem.from_uri(uri if "://" in uri else posixpath.abspath(uri))
        return cls(filesystem, root.rstrip("/"))

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def read(self, relative: str) -> str | None:
        """The file's text, or None if there is no such file."""
        if self.filesystem.get_file_info(self._path(relative)).type != fs.FileType.File:
            return None
        with self.filesystem.open_input_stream(self._path(relative)) as stream:
            return stream.read().decode("utf-8")

    def write(self, relative: str, text: str) -> None:
        """Write the file whole or not at all: through a hidden temporary file, moved into
        place (a crash leaves at most that temporary file, never a half-written state)."""
        folder, name = posixpath.split(relative)
        temporary = posixpath.join(folder, f".{name}.tmp")
        self.filesystem.create_dir(posixpath.dirname(self._path(relative)), recursive=True)
        with self.filesystem.open_output_stream(self._path(temporary)) as stream:
            stream.write(text.encode("utf-8"))
        self.filesystem.move(self._path(temporary), self._path(relative))

    def remove(self, relative: str) -> None:
        """Remove the file, if there is one."""
        if self.filesystem.get_file_info(self._path(relative)).type == fs.FileType.File:
            self.filesystem.delete_file(self._path(relative))

    def remove_temporary_files(self, relative: str) -> None:
        """Remove the hidden temporary files a stopped writer left in a folder (`.0.<uuid>.tmp`):
        Spark would take the folder for a used one, and they hold nothing committed."""
        for name in self.names(relative):
            if name.startswith(".") and name.endswith(".tmp"):
                self.filesystem.delete_file(self._path(f"{relative}/{name}"))

    def names(self, relative: str) -> list[str]:
        """The names of the files in a folder (none if it does not exist)."""
        selector = fs.FileSelector(self._path(relative), allow_not_found=True)
        return [posixpath.basename(info.path) for info in self.filesystem.get_file_info(selector)]
