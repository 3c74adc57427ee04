"""The runs: the live stream and reprocessing, one pipeline for both.

- `pipeline`: read, decode, check the filters, filter and shape, write (`start_pipeline`).
- `stream`: the live job on Kafka topics: batch sizing, restarts at new writer schemas.
- `inputs`: what reprocessing reads: Avro files, Parquet or Iceberg tables, Kafka offset
  ranges, each decoded as the live job decodes Kafka's records.
- `reprocess`: the run over them, with its progress line, or a count only.
- `progress`: the micro-batch log line, from the queries' progress.
- `ledger`: what each live micro-batch and each reprocessing run read and kept.
- `audit`: every offset read accounted for against the outputs; `repair`: the missing
  ones read again, duplicates kept once.
"""
