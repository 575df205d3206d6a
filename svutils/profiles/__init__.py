"""Experiment profiles: YAML files read by `svutils.config.load_profile` (package data)."""
