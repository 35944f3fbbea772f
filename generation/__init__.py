"""spanrag generation."""
