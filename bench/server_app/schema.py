"""Schema of the server benchmarks' functions folder: one table with an index."""

from kernel_ext import define_schema, define_table, v

schema = define_schema(
    {
        "items": define_table({"key": v.number(), "value": v.number(), "name": v.string()}).index(
            "by_key", ["key"]
        ),
    }
)
