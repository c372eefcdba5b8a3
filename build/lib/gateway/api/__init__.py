"""The HTTP API: one module per resource, assembled in :mod:`gateway.api.app`."""
