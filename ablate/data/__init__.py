"""The data: datasets by name, one module per format, checked, capped and split.

Owns nothing itself; each module says what it owns. Torch-free.
"""
