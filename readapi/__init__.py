"""The read API: KPI history, latest windows and alerts from TimescaleDB over HTTP."""
