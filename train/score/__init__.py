"""Scoring: metrics, the simple baselines on the same split, `labeler evaluate`, and the report."""
