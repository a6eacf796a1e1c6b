"""Scoring: crystal rules, image-quality checks, saliency, and the batch engine."""
