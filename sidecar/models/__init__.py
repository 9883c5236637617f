"""Model backends on torch + transformers. Importing this package loads torch."""
