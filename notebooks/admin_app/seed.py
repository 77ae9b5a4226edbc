"""Seed data for the example (an internal mutation, safe to run twice)."""

from kernel_ext import internal_mutation

PEOPLE = [
    ("ada@example.com", "Ada Lovelace", "admin", None),
    ("grace@example.com", "Grace Hopper", "staff", ["users:set_role"]),
    ("alan@example.com", "Alan Turing", "viewer", None),
]


@internal_mutation
def run(ctx):
    created = 0
    for email, name, role, permissions in PEOPLE:
        existing = (
            ctx.db.query("users")
            .with_index("by_email", lambda q, e=email: q.eq("email", e))
            .unique()
        )
        if existing is None:
            doc = {"email": email, "name": name, "role": role}
            if permissions:
                doc["permissions"] = permissions
            ctx.db.insert("users", doc)
            created += 1
    return created
