"""Shared test configuration: unit tests need nothing; integration fixtures live in tests/integration."""
