from kernel_ext import define_schema, define_table, v

schema = define_schema(
    {
        "counters": define_table({"name": v.string(), "value": v.number()}).index(
            "by_name", ["name"]
        ),
        "messages": define_table({"author": v.string(), "body": v.string()}),
    }
)
