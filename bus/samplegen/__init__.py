"""Sample platform messages: realistic, valid by construction, and named invalid variants.

Used for the shipped samples (``renkei samples generate``), the tests and the benchmarks.
"""
