"""Ranking a frame against a map: the global descriptor search, the position prior, sequence matching."""
