const fs = require("fs");
const os = require("os");

function input(name) {
  return (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
}

const who = input("who-to-greet");
console.log(`Hello ${who}! spaced=${input("my input")}`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `time=noon${os.EOL}`);
fs.appendFileSync(process.env.GITHUB_STATE, `greeted=${who}${os.EOL}`);
console.log(`::save-state name=via_command::yes`);
console.log(`event=${process.env.GITHUB_EVENT_NAME} action_path=${__dirname === process.env.GITHUB_WORKSPACE + "/.github/actions/node-hello"}`);
if (who === "fail") {
  console.log("::error::greeting failed");
  process.exitCode = 1;
}
