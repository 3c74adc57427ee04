"""Kafka: every read of Fink's topics.

- `source`: Spark's Kafka source (options, the stream's subscriptions, offset ranges).
- `client`: the driver's small reads with confluent-kafka (topics, newest messages,
  records at positions, offsets at a time, topic schemas).
- `positions`: where a job stands on each partition, its lag and ETA (`status`, `topics`).
"""
