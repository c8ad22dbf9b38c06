// Runs the real @actions/cache client against a cache server.
//   node cache-client.mjs save <key> <path>...
//   node cache-client.mjs restore <key> <restore-keys comma-separated or ""> <path>...
// The server is chosen through the environment exactly as in a job (ACTIONS_CACHE_URL,
// ACTIONS_RESULTS_URL, ACTIONS_RUNTIME_TOKEN, ACTIONS_CACHE_SERVICE_V2). Prints one JSON
// line: {"result": <cache id, matched key or null>}.
import * as cache from "@actions/cache";

const [mode, key, ...rest] = process.argv.slice(2);
let result;
if (mode === "save") {
  result = await cache.saveCache(rest, key);
} else if (mode === "restore") {
  const [restoreKeys, ...paths] = rest;
  const keys = restoreKeys ? restoreKeys.split(",") : [];
  result = (await cache.restoreCache(paths, key, keys)) ?? null;
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
console.log(JSON.stringify({ result }));
