"""The drift check on logged predictions: the two-sample statistics, the check against a
reference window, and its HTML report."""
