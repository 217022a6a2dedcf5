"""Scoring with ground truth: metrics, datasets, replays, confidence evaluation."""
