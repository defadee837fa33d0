"""``python -m simulators`` runs the ``sensord-sim`` command line."""

from simulators.cli import main

raise SystemExit(main())
