"""Helpers shared by the test modules: real recording receivers, configuration directories
pointing at them, and message corpora."""
