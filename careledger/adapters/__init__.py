"""Infrastructure adapters: the event store on ``eventsourcing`` (``store``), the embedded
Kafka-protocol broker (``broker``) and the local Prometheus server (``prometheus_server``)."""
