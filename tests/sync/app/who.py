from kernel_ext import query


@query
def ami(ctx):
    return ctx.auth.get_user_identity()
