"""TextGrad's `utils` module path."""
