"""Evaluation: scoring on the test split, the prediction store, paired statistics, the gate that judges
them, and the report and folder that evaluate writes."""
