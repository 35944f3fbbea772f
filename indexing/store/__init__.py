"""spanrag indexing/store."""
