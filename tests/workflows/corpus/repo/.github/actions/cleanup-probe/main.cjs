const label = process.env.INPUT_LABEL;
console.log(`main ${label}`);
if (process.env.INPUT_FAIL === "true") {
  console.log(`::error::main ${label} failed`);
  process.exit(3);
}
