"""The `ioc` command: local services, components, the demo."""
