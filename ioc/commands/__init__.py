"""Sub-commands of `ioc`, one module per component."""
