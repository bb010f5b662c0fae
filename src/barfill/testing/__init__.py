"""Test support that ships with the package: a simulated clock (``barfill.testing.clock``)."""
