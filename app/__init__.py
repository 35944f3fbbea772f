"""spanrag app."""
