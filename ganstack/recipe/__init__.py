"""Reading recipes: safe YAML, `base:` and `--set` (files), the schema, structuring and resolving components (resolve), and the one path rule (paths)."""
