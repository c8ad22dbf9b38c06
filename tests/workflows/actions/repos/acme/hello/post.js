console.log(`post state=${process.env.STATE_from_pre},${process.env.STATE_from_main} status=${process.env.INPUT_WHO}`);
