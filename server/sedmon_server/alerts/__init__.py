"""Alerts: rules on ingest, a stalled sweep, an outbox, and webhook delivery to chat.

Layers, one idea per module: `rules` decides (pure functions, state as data), `engine`
applies the rules inside the ingest transaction and writes alerts and outbox rows,
`sweep` finds stalled runs, `dispatcher` delivers (retries, signatures via `signing`,
bodies via `formats`), `api` serves webhooks, alerts and silences, `tables` holds the
schema and `runtime` wires it all into the app (`install`, called by create_app).
"""

from sedmon_server.alerts.runtime import install

__all__ = ["install"]
