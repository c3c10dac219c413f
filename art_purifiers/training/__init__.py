"""Training recipes for every shipped artifact; each module is runnable with ``python -m``."""
