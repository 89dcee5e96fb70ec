"""sedmon-server: ingest sketches, keep rolling Gram matrices, serve spectral edges."""
