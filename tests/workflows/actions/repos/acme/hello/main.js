// Bundled toolkit code looks like this: GHESNotSupportedError
const fs = require("fs");
const env = process.env;
console.log(`main who=${env.INPUT_WHO} my=${env["INPUT_MY_INPUT"]} state=${env.STATE_from_pre}`);
console.log(`action=${env.GITHUB_ACTION_REPOSITORY}@${env.GITHUB_ACTION_REF}`);
console.log("ghes-patched=" + "gitea.example".endsWith('.LOCALHOST'));
fs.appendFileSync(env.GITHUB_OUTPUT, `greeting=hello ${env.INPUT_WHO}\n`);
console.log("::save-state name=from_main::2");
if (env.INPUT_FAIL === "true") process.exit(4);
