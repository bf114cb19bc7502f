"""The `ganstack` command (main) and the generated reference pages (reference)."""
