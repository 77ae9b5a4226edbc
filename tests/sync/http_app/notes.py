"""Functions the HTTP actions of the tests call."""

from kernel_ext import action, internal_mutation, query


@internal_mutation
def add(ctx, text):
    return ctx.db.insert("notes", {"text": text})


@query
def texts(ctx):
    return [doc["text"] for doc in ctx.db.query("notes").collect()]


@action
def shout(ctx, text):
    return text.upper()
