"""Scoring the exported model as the API runs it: the evaluate stage's figures, the rejection
metrics for non-digits, the check of the API's own path, and the plots."""
