// The official JavaScript clients print a function's log lines (console output captured here).
// Usage: node logs.mjs URL
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const url = process.argv[2];
const greet = makeFunctionReference("logs:greet");
const printed = [];
for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => printed.push(`${level}: ${args.map(String).join(" ")}`);
  console[`_${level}`] = original;
}
const emit = (label, value) => console._log(JSON.stringify([label, value ?? null]));

emit("http", await new ConvexHttpClient(url).query(greet, { name: "ada" }));
const client = new ConvexClient(url);
emit("ws", await client.query(greet, { name: "ada" }));
await client.close();
emit("console", printed);
