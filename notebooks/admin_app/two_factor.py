"""Two-factor settings per user."""

from kernel_ext import mutation, query, v


@query(args={"userId": v.id("users")})
def get(ctx, userId):
    return (
        ctx.db.query("two_factor_settings")
        .with_index("by_user", lambda q: q.eq("userId", userId))
        .unique()
    )


@mutation(args={"userId": v.id("users"), "enabled": v.boolean(), "method": v.string()})
def configure(ctx, userId, enabled, method):
    current = get.handler(ctx, userId)
    if current is None:
        return ctx.db.insert(
            "two_factor_settings", {"userId": userId, "enabled": enabled, "method": method}
        )
    ctx.db.patch(current["_id"], {"enabled": enabled, "method": method})
    return current["_id"]
