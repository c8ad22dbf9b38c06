import * as core from "@actions/core";

const who = core.getInput("who", { required: true });
core.info(`pre ${who}`);
core.saveState("pre", `pre-of-${who}`);
