"""Wire formats: Avro single-object encoding resolved against the versions kept in ``schemas/``."""
