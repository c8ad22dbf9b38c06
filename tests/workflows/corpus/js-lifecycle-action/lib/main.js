import * as core from "@actions/core";

const who = core.getInput("who", { required: true });
const pre = core.getState("pre");
core.info(`main ${who} pre=[${pre}]`);
core.saveState("main", `main-of-${who}`);
core.setOutput("seen", pre || "none");
if (core.getBooleanInput("fail-main")) {
  core.setFailed(`${who} asked to fail`);
}
