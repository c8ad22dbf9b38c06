const fs = require("fs");
console.log("legacy node12 action ran, main=" + require.main.filename.endsWith("legacy-node12/index.js"));
fs.appendFileSync(process.env.GITHUB_OUTPUT, "ran=node12\n");
