"""The networks: the activation catalogue and functions, stacked layers, the models composed of
them, and the model families.

Owns nothing itself; each module says what it owns.
"""
