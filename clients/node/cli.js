#!/usr/bin/env node
'use strict';
// node clients/node/cli.js --server HOST:PORT [--token T] submit HANDLER INPUT_JSON [KEY]
//   submits a cpu unit, waits for it, prints the final unit as one JSON document.
// node clients/node/cli.js --server HOST:PORT events [AFTER_SEQ]
//   prints up to 100 events as JSON lines.

const { KrakoClient } = require('./krako');

async function main(argv) {
  const opts = { server: process.env.KRAKO_SERVER || '127.0.0.1:7420', token: process.env.KRAKO_TOKEN };
  const rest = [];
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--server') opts.server = argv[(i += 1)];
    else if (argv[i] === '--token') opts.token = argv[(i += 1)];
    else rest.push(argv[i]);
  }
  const client = new KrakoClient(opts.server, { token: opts.token });
  try {
    const [command, ...args] = rest;
    if (command === 'submit') {
      const [handler, input, key] = args;
      const reply = await client.submit({ kind: 'cpu', handler, input_json: input || 'null', client_key: key || '' });
      const unit = await client.wait(reply.work_unit_id);
      process.stdout.write(`${JSON.stringify({ ...unit, duplicate: reply.duplicate })}\n`);
    } else if (command === 'events') {
      const reply = await client.readEvents({ after_seq: args[0] || '0', limit: 100 });
      for (const event of reply.events) process.stdout.write(`${JSON.stringify(event)}\n`);
    } else {
      throw new Error(`unknown command ${command}: expected submit or events`);
    }
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`krako-node: ${err.code !== undefined ? `code ${err.code}: ${err.details}` : err.message}\n`);
  process.exit(2);
});
