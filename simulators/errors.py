"""The simulator's exceptions: one root, messages meant for the user."""


class SimulatorError(Exception):
    """Root of the simulator's errors; the message is meant for the user."""
