"""What a run leaves on disk: checkpoints (checkpoint) and its records (record: environment.json, metrics.jsonl)."""
