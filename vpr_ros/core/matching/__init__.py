"""Re-ranking: local features, matchers, geometric verification."""
