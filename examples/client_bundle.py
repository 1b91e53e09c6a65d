"""The browser client bundle (clients/js, npm ``asgi-rt-client``) as a route both example
pages load it from: ``/asgi-rt-client.js``. ``make run`` builds it (``make js-build``)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

BUNDLE = Path(__file__).resolve().parents[1] / "clients" / "js" / "dist" / "index.js"


async def client_bundle(request: Request) -> Response:
    if not BUNDLE.exists():
        return PlainTextResponse("the client is not built: run `make js-build`", status_code=503)
    return FileResponse(BUNDLE, media_type="text/javascript")
