from kernel_ext import query


@query
def where(ctx):
    return "nested/deep:where"
