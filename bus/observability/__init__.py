"""Observability: Prometheus metrics (``/metrics``), readiness (``/readyz``) and JSON logs.

Counters and histograms are kept by each process (prometheus-client, in multiprocess mode
when ``PROMETHEUS_MULTIPROC_DIR`` is set); the state of the queue is read from the store at
scrape time, so every process reports the same queue (see docs/operations.md).
"""
