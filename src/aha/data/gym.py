"""reasoning-gym adapter (filled in by a later commit)."""
