"""Entity state as stored: the table values (``values.py``) of the projections timed triggers
follow (DESIGN "state tables"); the projections themselves are ``streams/domain/projection.py``."""
