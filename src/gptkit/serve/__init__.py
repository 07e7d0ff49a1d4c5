"""``gptkit serve``: an OpenAI-compatible HTTP server over the continuous-batching
engine (:mod:`gptkit.serve.engine.batching`).

The server is a thin client: it decodes HTTP requests into engine requests and
encodes the engine's events as OpenAI responses or server-sent events. It needs
the ``serve`` extra (Starlette, uvicorn, pydantic, prometheus-client); nothing
here is imported by ``import gptkit`` or ``gptkit --help``.
"""
