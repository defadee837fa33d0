"""sensord benchmarks: `python -m bench` prints one JSON object (README.md in this folder)."""
