"""Small shared utilities (sharding, I/O helpers)."""
