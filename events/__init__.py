"""The shared contract: event types, envelope, topics, KPI catalogue, domain rules.

Pure: nothing here does I/O.
"""
