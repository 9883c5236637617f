"""Transport faces of the engine. Each converts its wire format to `sidecar.types` and back."""
