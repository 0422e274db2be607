"""The OpenAI-compatible HTTP door: `POST /v1/chat/completions` (unary and SSE) and `GET /v1/models` over the
same core as the gRPC door, behind the same principals. One module per concern: errors.py (error kinds to HTTP
statuses and OpenAI's error JSON), openai_request.py (an OpenAI body to a core request), openai_response.py (a
core result to OpenAI's JSON and SSE chunks), app.py (the Starlette routes), serve.py (uvicorn in the daemon's
own event loop)."""
