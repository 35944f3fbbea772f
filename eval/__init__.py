"""spanrag eval."""
