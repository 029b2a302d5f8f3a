"""The study: the YAML schema, its loader and cross-field rules, and the one table of metrics.

Owns nothing itself; each module says what it owns. Torch-free: `ablate report` imports this stage.
"""
