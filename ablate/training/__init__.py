"""Training: the fleet, the epoch loop, evaluation, samples, checkpoints and the kept members.

Owns nothing itself; each module says what it owns.
"""
