"""Real Kafka and the SES emulator on 127.0.0.1, for the demo, the tests and the benchmarks.

Nothing here is a mock: ``kafka_broker`` runs Apache Kafka from its Maven Central jars, and
``ses_emulator`` runs moto's server, which speaks the SES HTTP API.
"""
