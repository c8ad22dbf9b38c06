const fs = require("fs");
console.log(`pre who=${process.env.INPUT_WHO}`);
fs.appendFileSync(process.env.GITHUB_STATE, "from_pre=1\n");
