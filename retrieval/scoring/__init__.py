"""Scorers applied to first-stage candidates (token-level late interaction)."""
