'use strict';
// Krako client for Node.js: loads the krako.v1 protos straight from proto/ (no generated code),
// so it speaks exactly the contract the daemon serves. Every call returns a Promise; a failed
// call rejects with the gRPC error (err.code is the status code, err.details the server's message).

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const FILES = ['gateway.proto', 'events.proto', 'admin.proto'].map((f) => path.join('krako', 'v1', f));

function loadPackage() {
  const definition = protoLoader.loadSync(FILES, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names exactly as in the .proto files
    longs: String,
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).krako.v1;
}

class KrakoClient {
  constructor(server = '127.0.0.1:7420', { token } = {}) {
    const v1 = loadPackage();
    const credentials = grpc.credentials.createInsecure();
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set('authorization', `Bearer ${token}`);
    this.gateway = new v1.GatewayService(server, credentials);
    this.events = new v1.EventService(server, credentials);
    this.admin = new v1.AdminService(server, credentials);
  }

  call(stub, method, request) {
    return new Promise((resolve, reject) => {
      stub[method](request, this.metadata, { deadline: Date.now() + 30000 }, (err, reply) =>
        err ? reject(err) : resolve(reply));
    });
  }

  submit(spec) { return this.call(this.gateway, 'SubmitWorkUnit', { spec }); }
  get(workUnitId) { return this.call(this.gateway, 'GetWorkUnit', { work_unit_id: workUnitId }); }
  readEvents(request) { return this.call(this.events, 'ReadEvents', request); }
  nodes() { return this.call(this.admin, 'ListNodes', {}); }

  // Resolves with the final WorkUnit once the unit is terminal (follows WatchWorkUnit).
  wait(workUnitId) {
    return new Promise((resolve, reject) => {
      let last = null;
      const stream = this.gateway.WatchWorkUnit({ work_unit_id: workUnitId }, this.metadata);
      stream.on('data', (update) => { last = update.work_unit; });
      stream.on('error', reject);
      stream.on('end', () => resolve(last));
    });
  }

  close() {
    for (const stub of [this.gateway, this.events, this.admin]) stub.close();
  }
}

module.exports = { KrakoClient, loadPackage };
