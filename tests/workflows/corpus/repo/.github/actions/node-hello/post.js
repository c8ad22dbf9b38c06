console.log(`post greeted=${process.env.STATE_greeted} via_command=${process.env.STATE_via_command}`);
