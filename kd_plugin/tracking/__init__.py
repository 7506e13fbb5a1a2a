"""Experiment tracking: where Sacred runs are stored (a local MongoDB wire-protocol server) and how to reach it."""
