"""spanrag compression."""
