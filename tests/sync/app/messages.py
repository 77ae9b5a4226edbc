from kernel_ext import mutation, query, v


@query
def list(ctx):
    return [
        {"author": m["author"], "body": m["body"]}
        for m in ctx.db.query("messages").order("asc").collect()
    ]


@mutation(args={"author": v.string(), "body": v.string()})
def send(ctx, author, body):
    ctx.db.insert("messages", {"author": author, "body": body})
