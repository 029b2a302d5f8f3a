"""The analysis side: the store → tables → statistics → figures → reports.

Everything here reads the Optuna store, CSVs and saved image arrays, never a model: no module
of this package imports torch (tests/integration/test_cli.py checks `ablate report` and
`ablate compare`), so rebuilding a report or comparing studies never loads PyTorch.
"""
