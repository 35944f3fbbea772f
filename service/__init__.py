"""spanrag service."""
