import * as core from "@actions/core";
import { readFileSync } from "node:fs";

core.info(`cleanup greeted=${core.getState("greeted")} missing=[${core.getState("nothing")}]`);
// The post phase appends to the summary file of its own step (main wrote the table).
const summary = readFileSync(process.env.GITHUB_STEP_SUMMARY, "utf8");
core.info(`summary heading=${summary.includes("<h1>Toolkit results</h1>")} table=${summary.includes("<th>who</th>")}`);
