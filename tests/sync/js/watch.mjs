// Subscribe with the WebSocket ConvexClient and print every update of counter:get, until the
// value reaches argv[3]. Usage: node watch.mjs URL TARGET
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const [url, target] = [process.argv[2], Number(process.argv[3])];
const client = new ConvexClient(url);
client.onUpdate(makeFunctionReference("counter:get"), { name: "reconnect" }, async (value) => {
  console.log(JSON.stringify(["value", value]));
  if (value >= target) {
    await client.close();
    process.exit(0);
  }
});
