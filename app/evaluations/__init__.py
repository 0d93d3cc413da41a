"""Stored evaluations: a registered version scored on a labeled dataset."""
