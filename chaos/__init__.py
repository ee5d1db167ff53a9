"""`ioc chaos`: the whole pipeline under faults, checked against a ledger of acknowledged events.

- :mod:`chaos.ledger` — what each way in acknowledged, and the comparison (pure).
- :mod:`chaos.traffic` — events with unique ids through Kafka, HTTP and MQTT, with
  duplicates, out-of-order and too-late events injected.
- :mod:`chaos.stack` — the components as child processes on ports of their own.
- :mod:`chaos.observe` — final KPI windows, dead letters and the raw ``events`` table.
- :mod:`chaos.faults` — the fault rows.
- :mod:`chaos.run` — one run: scenarios in sequence, then the report.
"""
