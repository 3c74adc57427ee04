"""A job's configuration, checked whole before Spark starts, and the SparkSession.

- `job`: the typed configuration (`JobConfig`: survey, Kafka, output, filters, trigger),
  parsed from YAML by `parse_config`/`load_config`, with errors that name the key;
  `effective_config`, what `fink-spark config` prints.
- `session`: the SparkSession with the pinned connector jars, locally or under spark-submit.
"""
