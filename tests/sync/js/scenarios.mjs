// The official Convex JavaScript client (npm `convex`) against our server.
// Usage: node scenarios.mjs URL   (env: TEST_TOKEN, TEST_ADMIN_KEY)
// Prints one JSON line per observation: [label, value]; exits non-zero on an unexpected error.
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";

const url = process.argv[2];
const ref = (name) => makeFunctionReference(name);

function plain(_key, value) {
  if (typeof value === "bigint") return { bigint: value.toString() };
  if (value instanceof ArrayBuffer) return { bytes: Buffer.from(value).toString("hex") };
  return value;
}
const emit = (label, value) => console.log(JSON.stringify([label, value ?? null], plain));

async function caught(promise) {
  try {
    return { ok: await promise };
  } catch (e) {
    return { convexError: e instanceof ConvexError, message: String(e.message), data: e.data ?? null };
  }
}

async function until(predicate, what, timeoutMs = 10000) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function http() {
  const client = new ConvexHttpClient(url);
  emit("http query", await client.query(ref("counter:get"), { name: "js1" }));
  emit("http mutation", await client.mutation(ref("counter:inc"), { name: "js1", by: 2 }));
  emit("http action", await client.action(ref("counter:inc_many"), { name: "js1", times: 2 }));
  emit("http after", await client.query(ref("counter:get"), { name: "js1" }));
  emit(
    "http typed",
    await client.query(ref("values:typed"), { n: 41n, b: new Uint8Array([0, 1, 255]).buffer }),
  );
  emit("http int64 max", await client.query(ref("values:echo"), { x: 2n ** 63n - 1n }));
  emit("http query error", await caught(client.query(ref("values:fail_convex"), { code: "JQ" })));
  emit(
    "http mutation error",
    await caught(client.mutation(ref("counter:fail_after_write"), { name: "js-rb" })),
  );
  emit("http plain error", await caught(client.query(ref("values:fail_plain"), {})));
  emit("http internal hidden", await caught(client.query(ref("counter:secret"), {})));
  if (process.env.TEST_ADMIN_KEY) {
    const admin = new ConvexHttpClient(url);
    admin.setAdminAuth(process.env.TEST_ADMIN_KEY);
    emit("http internal", await admin.query(ref("counter:secret"), {}));
  }
  if (process.env.TEST_TOKEN) {
    client.setAuth(process.env.TEST_TOKEN);
    emit("http whoami", await client.query(ref("who:ami"), {}));
  }
  // consistentQuery: every read at the ts of the client's first one (query_ts + query_at_ts).
  const consistent = new ConvexHttpClient(url);
  emit("consistent first", await consistent.consistentQuery(ref("counter:get"), { name: "c1" }));
  await client.mutation(ref("counter:inc"), { name: "c2", by: 1 }); // not read by c1's query
  emit("consistent unrelated", await consistent.consistentQuery(ref("counter:get"), { name: "c1" }));
  await client.mutation(ref("counter:inc"), { name: "c1", by: 1 }); // changes what it reads
  emit("consistent changed", await caught(consistent.consistentQuery(ref("counter:get"), { name: "c1" })));
}

async function websocket() {
  const client = new ConvexClient(url);
  const other = new ConvexHttpClient(url);
  const updates = [];
  const unsubscribe = client.onUpdate(ref("messages:list"), {}, (messages) => updates.push(messages));
  await until(() => updates.length > 0, "the first result");
  emit("ws first", updates[0]);

  // Read your writes: when the mutation resolves, the subscription already shows it.
  await client.mutation(ref("messages:send"), { author: "ws", body: "mine" });
  emit("ws after own mutation", updates[updates.length - 1]);

  // A write by another client arrives as an update.
  await other.mutation(ref("messages:send"), { author: "http", body: "theirs" });
  await until(
    () => updates[updates.length - 1].some((m) => m.body === "theirs"),
    "another client's write",
  );
  emit("ws after other mutation", updates[updates.length - 1]);
  unsubscribe();

  emit("ws query", await client.query(ref("counter:get"), { name: "js1" }));
  emit("ws action", await client.action(ref("values:echo_action"), { x: [7n, new Uint8Array([9]).buffer] }));
  emit("ws typed", await client.query(ref("values:typed"), { n: -5n, b: new ArrayBuffer(0) }));
  emit("ws query error", await caught(client.query(ref("values:fail_convex"), { code: "JW" })));
  emit(
    "ws mutation error",
    await caught(client.mutation(ref("counter:fail_after_write"), { name: "js-rb2" })),
  );
  emit("ws action error", await caught(client.action(ref("values:fail_action"), { code: "JA" })));

  const errors = [];
  const stop = client.onUpdate(ref("values:fail_convex"), { code: "SUB" }, () => {}, (e) => errors.push(e));
  await until(() => errors.length > 0, "a subscription error");
  emit("ws subscription error", { convexError: errors[0] instanceof ConvexError, data: errors[0].data });
  stop();

  if (process.env.TEST_TOKEN) {
    const changes = [];
    client.setAuth(async () => process.env.TEST_TOKEN, (isAuthenticated) => changes.push(isAuthenticated));
    await until(() => changes.length > 0, "auth confirmation");
    emit("ws auth confirmed", changes[0]);
    emit("ws whoami", await client.query(ref("who:ami"), {}));
  }
  await client.close();
}

try {
  await http();
  await websocket();
  emit("done", true);
  process.exit(0);
} catch (e) {
  console.error(e);
  process.exit(1);
}
