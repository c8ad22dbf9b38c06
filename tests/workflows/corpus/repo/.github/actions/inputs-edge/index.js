const fs = require("fs");
const env = process.env;
console.log(`old=[${env["INPUT_OLD-NAME"] ?? "unset"}] new=[${env["INPUT_NEW-NAME"]}]`);
console.log(`my=[${env["INPUT_MY-INPUT"]}] ref=[${env.INPUT_REF}] must=[${env["INPUT_MUST-HAVE"] ?? "unset"}]`);
console.log(`token-matches=${env.INPUT_TOKEN !== "" && env.INPUT_TOKEN === env.EXPECTED_TOKEN}`);
console.log(`surprise=[${env.INPUT_SURPRISE ?? "unset"}]`);
fs.appendFileSync(env.GITHUB_OUTPUT, "result=declared\nextra=undeclared\n");
