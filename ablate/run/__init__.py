"""The run: where trials come from (sources), the store, the run loop, tracking and status.

Owns nothing itself; each module says what it owns.
"""
