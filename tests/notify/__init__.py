"""Tests of the channel types, their registry, and the consumers that feed them."""
