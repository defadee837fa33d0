"""Tests of the config loader, `sensord check`, rule reload and the docs that describe them."""
