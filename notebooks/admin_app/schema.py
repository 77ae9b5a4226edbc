"""The admin panel's auth module: users, their sessions and two-factor settings."""

from kernel_ext import define_schema, define_table, v

ROLES = v.union(v.literal("admin"), v.literal("staff"), v.literal("viewer"))

schema = define_schema(
    {
        "users": define_table(
            {
                "email": v.string(),
                "name": v.string(),
                "role": ROLES,
                "permissions": v.optional(v.array(v.string())),
                "lastLogin": v.optional(v.string()),
            }
        )
        .index("by_email", ["email"])
        .index("by_role", ["role"]),
        "user_sessions": define_table(
            {"userId": v.id("users"), "ip": v.string(), "startedAt": v.string()}
        ).index("by_user", ["userId"]),
        "two_factor_settings": define_table(
            {"userId": v.id("users"), "enabled": v.boolean(), "method": v.string()}
        ).index("by_user", ["userId"]),
    }
)
