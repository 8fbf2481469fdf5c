"""Evaluation with the ADAM definitions: metrics, detection matching, the tables and their markdown."""
