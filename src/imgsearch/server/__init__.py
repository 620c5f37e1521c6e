"""The HTTP face of imgsearch: FastAPI routes over imgsearch.service, and the web page. FastAPI is imported only here."""

from imgsearch.server.app import create_app, run

__all__ = ["create_app", "run"]
