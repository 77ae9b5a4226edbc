// The example admin app through the official JavaScript HTTP client with signed user tokens.
// Usage: node admin_app.mjs URL   (env: VIEWER_TOKEN, ADMIN_TOKEN, FORGED_TOKEN)
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";

const url = process.argv[2];
const ref = (name) => makeFunctionReference(name);
const emit = (label, value) => console.log(JSON.stringify([label, value ?? null]));

async function attempt(token, name, args) {
  const client = new ConvexHttpClient(url);
  client.setAuth(token);
  try {
    return { ok: (await client.mutation(ref(name), args)) ?? null };
  } catch (e) {
    if (e instanceof ConvexError) return { convexError: true, data: e.data };
    return { convexError: false, message: String(e.message) };
  }
}

const reader = new ConvexHttpClient(url);
const alan = await reader.query(ref("users:get_user_by_email"), { email: "alan@example.com" });
const change = { userId: alan._id, role: "staff" };
emit("viewer", await attempt(process.env.VIEWER_TOKEN, "users:set_role", change));
emit("forged", await attempt(process.env.FORGED_TOKEN, "users:set_role", { ...change, role: "admin" }));
emit("admin", await attempt(process.env.ADMIN_TOKEN, "users:set_role", change));
const after = await reader.query(ref("users:get_user_by_email"), { email: "alan@example.com" });
emit("role after", after.role);
