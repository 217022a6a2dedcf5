"""Confidence: the BayesCap head, calibrators, hypothesis features, training from a map."""
