"""One POST endpoint in aiohttp or in Starlette under uvicorn, for benchmarks.http_frameworks.

    python benchmarks/http_app.py aiohttp|starlette PORT

It does what the server's classify endpoint does around the model: read the whole body (an
image file) and answer a small JSON object. Run with .venv-clients' Python, which has both
frameworks (uvicorn and Starlette come with the kserve SDK).
"""

import sys

ANSWER = {"model": "scratch_cnn", "version": 1, "class_index": 2, "label": "2"}


def run_aiohttp(port: int) -> None:
    from aiohttp import web

    async def classify(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({**ANSWER, "bytes": len(body)})

    app = web.Application()
    app.add_routes([web.post("/v1/models/{model}/classify", classify)])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def classify(request):
        body = await request.body()
        return JSONResponse({**ANSWER, "bytes": len(body)})

    app = Starlette(routes=[Route("/v1/models/{model}/classify", classify, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    {"aiohttp": run_aiohttp, "starlette": run_starlette}[sys.argv[1]](int(sys.argv[2]))
