"""File tasks (filled in by the next commit)."""
