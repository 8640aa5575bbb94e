"""Model kinds defined only in the tests (a kind needs nothing in ``src/``)."""
