"""The plugin registry (registry) and the loader that fills it from entry points, each plugin on its own (loader)."""
