"""The HTTP routes of the HTTP action tests."""

from kernel_ext import Response, http_action, http_router

http = http_router()


@http_action
def exact(ctx, request):
    return Response("exact", headers={"X-Route": "exact"})


@http_action
def prefix_short(ctx, request):
    return Response(f"short {request.path}")


@http_action
def prefix_long(ctx, request):
    return Response(f"long {request.path}")


@http_action
def echo(ctx, request):
    return Response.json(
        {
            "method": request.method,
            "url": request.url,
            "json": request.json(),
            "type": request.headers["CONTENT-TYPE"],
        },
        status=201,
    )


@http_action
def size(ctx, request):
    return Response(str(len(request.body())))


@http_action
def boom(ctx, request):
    raise RuntimeError("the secret is hunter2")


@http_action
def not_a_response(ctx, request):
    return {"hello": "world"}


@http_action
def note(ctx, request):
    ctx.run_mutation("notes:add", {"text": request.text()})
    shouted = ctx.run_action("notes:shout", {"text": request.text()})
    return Response.json({"texts": ctx.run_query("notes:texts"), "shouted": shouted})


@http_action
def whoami(ctx, request):
    identity = ctx.auth.get_user_identity()
    return Response.json(None if identity is None else identity["subject"])


http.route(path="/exact", method="GET", handler=exact)
http.route(path_prefix="/files/", method="GET", handler=prefix_short)
http.route(path_prefix="/files/deep/", method="GET", handler=prefix_long)
http.route(path="/files/deep/x", method="GET", handler=exact)
http.route(path="/echo", method="POST", handler=echo)
http.route(path="/size", method="PUT", handler=size)
http.route(path="/boom", method="GET", handler=boom)
http.route(path="/not-a-response", method="GET", handler=not_a_response)
http.route(path="/note", method="POST", handler=note)
http.route(path="/whoami", method="GET", handler=whoami)
