"""Users: lookups, logins and role-checked administration.

Callers are identified by their token's email claim; a caller may administer users only if
their `users` document has role "admin" or the permission the operation names.
"""

from kernel_ext import ConvexError, action, internal_query, mutation, query, v


def _caller(ctx):
    """The `users` document of the authenticated caller, or a ConvexError."""
    identity = ctx.auth.get_user_identity()
    if identity is None:
        raise ConvexError({"code": "UNAUTHENTICATED", "message": "Sign in first"})
    email = identity.get("email")
    user = ctx.db.query("users").with_index("by_email", lambda q: q.eq("email", email)).unique()
    if user is None:
        raise ConvexError({"code": "UNKNOWN_USER", "email": email})
    return user


def _require(ctx, permission):
    user = _caller(ctx)
    if user["role"] != "admin" and permission not in user.get("permissions", []):
        raise ConvexError({"code": "FORBIDDEN", "needs": permission, "role": user["role"]})
    return user


@query(args={"email": v.string()})
def get_user_by_email(ctx, email):
    return ctx.db.query("users").with_index("by_email", lambda q: q.eq("email", email)).unique()


@query(args={"role": v.optional(v.string())})
def list_users(ctx, role=None):
    if role is None:
        return ctx.db.query("users").collect()
    return ctx.db.query("users").with_index("by_role", lambda q: q.eq("role", role)).collect()


@mutation(args={"userId": v.id("users"), "when": v.string()})
def update_last_login(ctx, userId, when):
    if ctx.db.get(userId) is None:
        raise ConvexError({"code": "NOT_FOUND", "userId": userId})
    ctx.db.patch(userId, {"lastLogin": when})


@mutation(
    args={
        "email": v.string(),
        "name": v.string(),
        "role": v.string(),
        "permissions": v.optional(v.array(v.string())),
    }
)
def create_user(ctx, email, name, role, permissions=None):
    _require(ctx, "users:create")
    if get_user_by_email.handler(ctx, email) is not None:
        raise ConvexError({"code": "EXISTS", "email": email})
    doc = {"email": email, "name": name, "role": role}
    if permissions is not None:
        doc["permissions"] = permissions
    return ctx.db.insert("users", doc)


@mutation(args={"userId": v.id("users"), "role": v.string()})
def set_role(ctx, userId, role):
    _require(ctx, "users:set_role")
    if ctx.db.get(userId) is None:
        raise ConvexError({"code": "NOT_FOUND", "userId": userId})
    ctx.db.patch(userId, {"role": role})


@mutation(args={"userId": v.id("users")})
def delete_user(ctx, userId):
    admin = _require(ctx, "users:delete")
    if admin["_id"] == userId:
        raise ConvexError({"code": "FORBIDDEN", "message": "Admins cannot delete themselves"})
    for table in ("user_sessions", "two_factor_settings"):
        for doc in ctx.db.query(table).with_index("by_user", lambda q: q.eq("userId", userId)):
            ctx.db.delete(doc["_id"])
    ctx.db.delete(userId)


@internal_query(args={"email": v.string()})
def id_for_email(ctx, email):
    user = get_user_by_email.handler(ctx, email)
    return None if user is None else user["_id"]


@mutation(args={"userId": v.id("users"), "ip": v.string(), "when": v.string()})
def start_session(ctx, userId, ip, when):
    ctx.run_mutation("users:update_last_login", {"userId": userId, "when": when})
    return ctx.db.insert("user_sessions", {"userId": userId, "ip": ip, "startedAt": when})


@action(args={"email": v.string(), "ip": v.string(), "when": v.string()})
def login(ctx, email, ip, when):
    """Look the user up, then record the login and a session (two transactions)."""
    user_id = ctx.run_query("users:id_for_email", {"email": email})
    if user_id is None:
        raise ConvexError({"code": "UNKNOWN_USER", "email": email})
    return ctx.run_mutation("users:start_session", {"userId": user_id, "ip": ip, "when": when})
