"""The web dashboard: pages and static files served by the server, behind the same tokens."""

from fastapi import FastAPI

from sedmon_server.dashboard.routes import router

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    """Mounts the dashboard's pages, login and static files (called by create_app)."""
    app.include_router(router)
