"""HTTP routers, one per resource; routes stay thin and call the store/ingest modules."""
