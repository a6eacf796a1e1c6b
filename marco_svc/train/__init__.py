"""Training, evaluation and export: data readers, splits, recipes, metrics, reports."""
