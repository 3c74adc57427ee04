"""The kit for tests, the demo and the benchmarks, apart from the product: a local Kafka
broker (KRaft, from Maven Central jars), a local Spark standalone cluster, the publisher
of real alerts (replicated with new ids) and the demo. No product module imports it."""
