const fs = require("fs");
console.log("legacy node16 action ran, main=" + require.main.filename.endsWith("legacy-node16/index.js"));
fs.appendFileSync(process.env.GITHUB_OUTPUT, "ran=node16\n");
