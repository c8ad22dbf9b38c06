// Saves or restores one path through the real @actions/cache client, whose module file
// TOOLKIT_CACHE names (tests/node/node_modules), exactly as an action bundling it would.
import { appendFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const cache = await import(pathToFileURL(process.env.TOOLKIT_CACHE).href);
const input = (name) => process.env[`INPUT_${name.toUpperCase()}`] ?? "";
const paths = [input("path")];
const result =
  input("mode") === "save"
    ? await cache.saveCache(paths, input("key"))
    : ((await cache.restoreCache(paths, input("key"))) ?? "miss");
appendFileSync(process.env.GITHUB_OUTPUT, `result=${result}\n`);
