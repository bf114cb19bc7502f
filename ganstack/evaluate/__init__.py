"""Scoring a trained stack with metric plugins, during training and by `ganstack eval`."""
