"""The runs: the live stream and reprocessing, one pipeline for both.

- `pipeline`: read, decode, check the filters, filter and shape, write (`start_pipeline`).
- `stream`: the live job on Kafka topics: batch sizing, restarts at new writer schemas.
- `inputs`: what reprocessing reads: Avro files, Parquet or Iceberg tables, Kafka offset
  ranges, each decoded as the live job decodes Kafka's records.
- `reprocess`: the run over them, with its progress line, or a count only.
- `progress`: the micro-batch log line, from the queries' progress.
"""
