import * as core from "@actions/core";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

async function run() {
  try {
    const name = core.getInput("name", { required: true });
    const raw = core.getInput("name", { trimWhitespace: false });
    core.info(`name=[${name}] raw=[${raw}]`);
    core.info(`dry-run=${core.getBooleanInput("dry-run")} debug=${core.isDebug()}`);
    core.info(`tags=${JSON.stringify(core.getMultilineInput("tags"))}`);
    core.info(`upper=${core.getInput("Upper-Case")} env=${process.env["INPUT_UPPER-CASE"]}`);
    core.debug("a debug line nobody sees");

    const secret = `tok-${name.toLowerCase()}-0451`;
    core.setSecret(secret);
    core.info(`the token is ${secret}`);

    core.setOutput("greeting", `Hello ${name}`);
    core.setOutput("json", { who: name, n: 2 });
    core.exportVariable("TOOLKIT_GREETING", `hi ${name}`);
    const bin = join(process.env.RUNNER_TEMP, "toolkit-bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "toolkit-tool"), "#!/bin/sh\necho toolkit-tool on PATH\n");
    chmodSync(join(bin, "toolkit-tool"), 0o755);
    core.addPath(bin);
    core.saveState("greeted", name);

    await core.group("Toolkit group", async () => {
      core.info("inside the group");
    });
    core.notice("Consider a newer API", { title: "Hint", file: "src/app/index.js", startLine: 3 });
    core.warning("Unused variable", { file: "src/app/index.js", startLine: 7, startColumn: 9 });
    core.error("Plain error annotation");

    await core.summary
      .addHeading("Toolkit results")
      .addTable([
        [{ data: "who", header: true }, { data: "dry", header: true }],
        [name, String(core.getBooleanInput("dry-run"))],
      ])
      .write();
  } catch (error) {
    core.setFailed(error.message);
  }
}

await run();
