"""spanrag indexing."""
