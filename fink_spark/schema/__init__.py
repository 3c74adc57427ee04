"""Schemas: what Fink's writers wrote, and the table that holds them all.

- `writer`: writer schemas from message keys (JSON, or a version naming a bundled schema),
  in the form Java's Avro accepts; `WriterSchemas`, the ones a job met.
- `table`: the table's schema, every writer's fields merged by one rule (new fields added,
  int/float widened, other retypes as sibling columns), and each writer's reader schema.
"""
