"""The Message Store: messages, deliveries, idempotency keys, audit chains, configuration."""
