import * as core from "@actions/core";

core.info(`post ${core.getInput("who")} pre=[${core.getState("pre")}] main=[${core.getState("main")}]`);
