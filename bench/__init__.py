"""sensord benchmarks: each prints one JSON object on stdout (see bench/README.md)."""
