"""A Starlette app that counts its executions, and an in-process httpx client, for the
IdempotencyMiddleware tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class App:
    """A Starlette app counting executions; behaviour per path."""

    def __init__(self) -> None:
        self.runs = 0
        self.bodies: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.entered: asyncio.Event | None = None  # set when a create call has started

        async def create(request: Request) -> Response:
            self.runs += 1
            body = await request.body()
            self.bodies.append(body)
            if self.entered is not None:
                self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            resp = JSONResponse({"run": self.runs, "echo": body.decode()}, status_code=201)
            resp.headers["location"] = f"/orders/{self.runs}"
            resp.set_cookie("session", "secret")
            return resp

        async def status(request: Request) -> Response:
            self.runs += 1
            return Response(f"run {self.runs}", status_code=int(request.path_params["code"]))

        async def crash(request: Request) -> Response:
            self.runs += 1
            raise RuntimeError("handler bug")

        async def big(request: Request) -> Response:
            self.runs += 1

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"x" * 1000

            return StreamingResponse(chunks(), media_type="text/plain")

        self.app = Starlette(
            routes=[
                Route("/orders", create, methods=["POST", "GET"]),
                Route("/status/{code:int}", status, methods=["POST"]),
                Route("/crash", crash, methods=["POST"]),
                Route("/big", big, methods=["POST"]),
            ]
        )


def client(mw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False), base_url="http://t"
    )
