"""`python -m ablate …` runs the command-line interface."""

from ablate.cli import main

raise SystemExit(main())
