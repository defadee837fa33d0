"""Scenario timelines shipped with ``sensord-sim`` (``--scenario NAME``)."""
