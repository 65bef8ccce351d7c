"""Test-only scaffolding shared by tests and benches (bench/ imports it from here, never from a conftest)."""
