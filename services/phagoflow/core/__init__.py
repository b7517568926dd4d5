"""The pure core: functions on arrays and dataclasses, no Kafka, MinIO or Triton inside."""
