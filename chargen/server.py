"""`chargen serve`: the runs named on the command line behind an OpenAI-style completions API.

    GET  /                 the playground page (chargen/playground.py)
    GET  /v1/models        the runs served; GET /v1/models/NAME one of them
    POST /v1/completions   a completion, whole or streamed as server-sent events
    GET  /health           liveness, completions running, characters sent so far

Starlette on uvicorn (the `serve` extra). The request is checked on the event loop
(`completions.parse_request`); the characters are drawn in a worker thread (`completion_steps`), one
per running completion, so a long or slow completion never stalls the others, and each step's text
crosses back to the loop through a `Handoff`. The first character goes out at once; after that what
has arrived goes out as one chunk at most every 20 ms, so sending costs little next to drawing. A
worker passes the GIL on after every character when others run (time.sleep(0)): with dozens running,
Python otherwise hands the GIL round unevenly, and a new completion's first character (or the event
loop's sending) waited up to seconds; at 32 clients this cut the median time to first character ~3x
at the same throughput (BENCHMARKS.md).

Safe by default: it listens on 127.0.0.1 and then answers only requests addressed to a loopback
name (a web page elsewhere cannot reach it through DNS rebinding); it takes only JSON bodies (a page
on another site cannot post one without a CORS preflight, which is never granted); every request is
bounded (`Limits`); a client that goes away stops its completion; a model name from a request is
only ever looked up among the runs loaded at start-up, never turned into a path.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chargen.completions import (CompletionRequest, Delta, Limits, RequestError, ServedRun, completion_steps,
                                 load_runs, logprobs_json, merge, parse_request)
from chargen.errors import UserError, first_line
from chargen.log import info
from chargen.playground import page

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]
# A streamed completion sends at most one chunk per this many seconds (50 a second: smooth to watch);
# sending a chunk per character would cost as much CPU as drawing the characters.
CHUNK_INTERVAL_S = 0.02
SHUTDOWN_GRACE_S = 3      # after Ctrl-C, how long open streams get to finish (they are cancelled first)
_END = object()           # a worker's last item
ERROR_TYPES = {429: "rate_limit_error", 500: "server_error"}


class Admission:
    """The completions running now: admits one while fewer than `limit` run; can cancel them all."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running: set[threading.Event] = set()
        self.chars_sent = 0
        self._lock = threading.Lock()

    def enter(self) -> threading.Event:
        """A cancel flag for a new completion, or RequestError 429 when `limit` are running."""
        with self._lock:
            if len(self.running) >= self.limit:
                raise RequestError(429, f"this server's limit of {self.limit} completions at once is reached "
                                   "(chargen serve --max-streams); retry shortly", None, "rate_limit_exceeded")
            cancelled = threading.Event()
            self.running.add(cancelled)
            return cancelled

    def leave(self, cancelled: threading.Event, chars: int) -> None:
        with self._lock:
            self.running.discard(cancelled)
            self.chars_sent += chars

    def share_gil(self) -> None:
        """(worker thread, after each character) Pass the GIL on when other completions are running:
        see the module's docstring. Alone, a worker keeps going (a sleep costs a context switch)."""
        if len(self.running) > 1:
            time.sleep(0)

    def cancel_all(self) -> None:
        with self._lock:
            for cancelled in self.running:
                cancelled.set()


class Handoff:
    """Items from a worker thread to the event loop, as many per wake-up of the loop as have come.

    Waking the loop once per character (call_soon_threadsafe per item) costs more than drawing the
    character; here a wake-up is scheduled only when none is pending, and `take` collects everything
    that arrived meanwhile.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: list = []
        self.ready = asyncio.Event()   # set and cleared only on the loop's thread
        self.wake_pending = False
        self._lock = threading.Lock()

    def put(self, item) -> bool:
        """(worker thread) Add an item; False when the loop is gone (the server stopped)."""
        with self._lock:
            self.items.append(item)
            if self.wake_pending:
                return True
            self.wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self.ready.set)
        except RuntimeError:  # the loop is closed
            return False
        return True

    async def take(self) -> list:
        """(event loop) Wait for items; returns all that have arrived, oldest first."""
        await self.ready.wait()
        with self._lock:
            items, self.items = self.items, []
            self.wake_pending = False
            self.ready.clear()
        return items


def error_response(e: RequestError) -> JSONResponse:
    """The OpenAI error shape: {"error": {"message", "type", "param", "code"}} with the status."""
    kind = ERROR_TYPES.get(e.status, "invalid_request_error")
    return JSONResponse({"error": {"message": e.message, "type": kind, "param": e.param, "code": e.code}},
                        status_code=e.status)


async def read_json(request: Request, limit: int) -> object:
    """The decoded JSON body; 415 when it is not sent as JSON, 413 over `limit` bytes, 400 when malformed."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(415, f"send the body as JSON with the header content-type: application/json "
                           f"(not {kind or 'none'})", None, "unsupported_media_type")
    declared = request.headers.get("content-length", "")
    too_big = RequestError(413, f"the request body is over {limit} bytes, the most this server reads "
                           "(it follows chargen serve --max-prompt-chars)", None, "request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise RequestError(400, f"the request body is not valid JSON ({first_line(e)})", None, "invalid_json") from None


def choice_json(delta: Delta, offset: int, request: CompletionRequest) -> dict:
    """One entry of `choices`; `offset` is how much of this choice's text was sent before this delta."""
    return {"text": delta.text, "index": delta.index, "finish_reason": delta.finish_reason,
            "logprobs": None if request.logprobs is None else logprobs_json(delta.logprobs, offset)}


def usage_json(request: CompletionRequest, chars: int) -> dict:
    """Usage in characters (a character is this model's token)."""
    prompt = len(request.prompt_ids)
    return {"prompt_tokens": prompt, "completion_tokens": chars, "total_tokens": prompt + chars}


class App:
    """The served runs, the limits, the running completions and the worker threads, with the handlers."""

    def __init__(self, runs: dict[str, ServedRun], limits: Limits):
        self.runs, self.limits = runs, limits
        self.admission = Admission(limits.max_streams)
        self.workers = ThreadPoolExecutor(max_workers=limits.max_streams, thread_name_prefix="completion")
        self.page = page(runs, limits)

    def starlette(self, trusted_hosts: list[str]) -> Starlette:
        @asynccontextmanager
        async def lifespan(app) -> AsyncIterator[None]:
            yield
            self.admission.cancel_all()   # the workers stop at their next character
            self.workers.shutdown(wait=True)

        async def http_error(request: Request, e: HTTPException) -> Response:
            return error_response(RequestError(e.status_code, f"{request.method} {request.url.path}: {e.detail}; "
                                               "this server offers GET /, GET /v1/models, POST /v1/completions"))

        routes = [Route("/", self.playground), Route("/v1/models", self.models),
                  Route("/v1/models/{name}", self.model), Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/health", self.health)]
        return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error},
                         middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)])

    async def playground(self, request: Request) -> Response:
        # The page loads nothing from anywhere and talks only to this server.
        policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
        return HTMLResponse(self.page, headers={"content-security-policy": policy, "x-content-type-options": "nosniff"})

    def _model_json(self, run: ServedRun) -> dict:
        return {"id": run.name, "object": "model", "created": run.created, "owned_by": "chargen",
                "chargen": run.describe()}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_json(run) for run in self.runs.values()]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.runs:
            return error_response(RequestError(404, f"the model {name!r} does not exist here; this server offers: "
                                               f"{', '.join(self.runs)}", "model", "model_not_found"))
        return JSONResponse(self._model_json(self.runs[name]))

    async def health(self, request: Request) -> Response:
        a = self.admission
        return JSONResponse({"status": "ok", "running": len(a.running), "max_streams": a.limit,
                             "chars_sent": a.chars_sent})

    async def completions(self, request: Request) -> Response:
        try:
            req = parse_request(await read_json(request, self.limits.body_bytes()), self.runs, self.limits)
            cancelled = self.admission.enter()
        except RequestError as e:
            return error_response(e)
        run = self.runs[req.model]
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": req.model}
        if req.stream:
            # The worker starts here, not in the event stream: a stream that never starts (the client left
            # before the headers went out) is never closed, and the worker's end is what frees the place.
            handoff = Handoff(asyncio.get_running_loop())
            self.workers.submit(self._produce, run, req, cancelled, handoff)
            return StreamingResponse(self._events(req, cancelled, head, handoff), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        try:
            deltas = await asyncio.get_running_loop().run_in_executor(self.workers, self._whole, run, req, cancelled)
        finally:
            cancelled.set()  # the handler was cancelled (client gone, shutdown): stop the worker too
        text_chars = sum(len(d.text) for d in deltas)
        return JSONResponse({**head, "choices": [choice_json(d, 0, req) for d in deltas],
                             "usage": usage_json(req, text_chars)})

    def _whole(self, run: ServedRun, req: CompletionRequest, cancelled: threading.Event) -> list[Delta]:
        """(worker thread) The whole completion, one Delta per choice."""
        deltas: list[Delta] = []
        try:
            for step in completion_steps(run, req, cancelled):
                deltas.extend(step)
                self.admission.share_gil()
            return merge(deltas)
        finally:
            self.admission.leave(cancelled, sum(len(d.text) for d in deltas))

    def _produce(self, run: ServedRun, req: CompletionRequest, cancelled: threading.Event, handoff: Handoff) -> None:
        """(worker thread) Draw the completion, handing each step's Deltas to the event loop."""
        chars = 0
        try:
            for step in completion_steps(run, req, cancelled):
                chars += sum(len(d.text) for d in step)
                if not handoff.put(step):
                    cancelled.set()
                self.admission.share_gil()
        except Exception as e:  # a bug: reported to the client as an error event, and here
            traceback.print_exc(file=sys.stderr)
            handoff.put(e)
        finally:
            self.admission.leave(cancelled, chars)
            handoff.put(_END)

    async def _events(self, req: CompletionRequest, cancelled: threading.Event, head: dict,
                      handoff: Handoff) -> AsyncIterator[str]:
        """The server-sent events of a streamed completion; closing it (the client left) cancels the worker.

        Whatever steps have arrived when the loop gets to them go out as one chunk; the first character
        goes out at once, then a chunk at most every CHUNK_INTERVAL_S.
        """
        sent = [0] * req.n  # characters of each choice sent so far (for logprobs' text_offset)
        try:
            finished = False
            while not finished:
                deltas: list[Delta] = []
                for item in await handoff.take():
                    if item is _END:
                        finished = True
                    elif isinstance(item, Exception):
                        error = {"message": f"chargen serve failed: {first_line(item)}", "type": "server_error",
                                 "param": None, "code": None}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        return
                    else:
                        deltas.extend(item)
                if deltas:
                    choices = []
                    for d in merge(deltas):
                        choices.append(choice_json(d, sent[d.index], req))
                        sent[d.index] += len(d.text)
                    chunk = json.dumps({**head, "choices": choices}, ensure_ascii=False, separators=(",", ":"))
                    yield f"data: {chunk}\n\n"
                    await asyncio.sleep(CHUNK_INTERVAL_S)  # let the next characters gather
            if req.include_usage:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage_json(req, sum(sent))})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); a port in use is a user error."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve it ({e.strerror}); use an address such as 127.0.0.1 "
                        "or 0.0.0.0") from None
    except OSError as e:  # (create_server adds the address to strerror: os.strerror is the reason alone)
        reason = os.strerror(e.errno) if e.errno else e
        raise UserError(f"cannot listen on {host} port {port}: {reason}; pass another --port "
                        "(--port 0 picks a free one)") from None


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def serve(run_dirs: list[Path], host: str, port: int, limits: Limits) -> int:
    """Load the runs, listen, and serve until Ctrl-C; returns the exit status."""
    runs = load_runs(run_dirs)
    sock = listen(host, port)
    local = is_loopback(sock)
    app = App(runs, limits).starlette(LOOPBACK_NAMES if local else ["*"])
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if not local:
        info(f"chargen: listening on {host}, not only this machine: anyone who can reach port {bound} can use "
             "the models (there is no authentication)")
    info(f"chargen: serving {', '.join(runs)} at http://{shown}:{bound}/ (the playground; the API at "
         f"http://{shown}:{bound}/v1); Ctrl-C stops")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
