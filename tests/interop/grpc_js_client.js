// The Workload API through @grpc/grpc-js (Node), with stubs loaded at run time
// from the project's proto/workload.proto by @grpc/proto-loader.
//
//   node grpc_js_client.js PROTO_DIR AUDIENCE
//
// Socket from SPIFFE_ENDPOINT_SOCKET (unix:///path). Fetches X.509-SVIDs, the
// X.509 bundles, a JWT-SVID for AUDIENCE, the JWT bundles, validates the
// JWT-SVID through ValidateJWTSVID, and prints the JSON report.py describes.
// Any failure: a message on stderr and exit status 1.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const TIMEOUT_MS = 30_000;

function deadline() {
  return { deadline: Date.now() + TIMEOUT_MS };
}

function metadata() {
  const md = new grpc.Metadata();
  md.add('workload.spiffe.io', 'true');
  return md;
}

// The first message of a server stream, then cancel it.
function first(stream) {
  return new Promise((resolve, reject) => {
    stream.once('data', (msg) => {
      resolve(msg);
      stream.cancel();
    });
    stream.once('error', (e) => {
      if (e.code !== grpc.status.CANCELLED) reject(e);
    });
  });
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), deadline(), (e, reply) => (e ? reject(e) : resolve(reply)));
  });
}

// Concatenated DER certificates, one by one (SEQUENCEs with long-form lengths).
function splitDer(chain) {
  const certs = [];
  let rest = chain;
  while (rest.length > 0) {
    if (rest[0] !== 0x30 || (rest[1] & 0x80) === 0) throw new Error('chain is not DER SEQUENCEs');
    const n = rest[1] & 0x7f;
    const length = 2 + n + rest.subarray(2, 2 + n).reduce((acc, b) => acc * 256 + b, 0);
    certs.push(rest.subarray(0, length));
    rest = rest.subarray(length);
  }
  return certs;
}

const b64 = (buf) => Buffer.from(buf).toString('base64');

async function main(protoDir, audience) {
  const socket = process.env.SPIFFE_ENDPOINT_SOCKET.replace(/^unix:\/\//, '');
  const definition = protoLoader.loadSync(path.join(protoDir, 'workload.proto'), { keepCase: true });
  const Api = grpc.loadPackageDefinition(definition).SpiffeWorkloadAPI;
  const api = new Api(`unix:${socket}`, grpc.credentials.createInsecure());
  const x509 = await first(api.FetchX509SVID({}, metadata(), deadline()));
  const bundles = await first(api.FetchX509Bundles({}, metadata(), deadline()));
  const jwt = await unary(api, 'FetchJWTSVID', { audience: [audience] });
  const jwtBundles = await first(api.FetchJWTBundles({}, metadata(), deadline()));
  const validated = await unary(api, 'ValidateJWTSVID', { audience, svid: jwt.svids[0].svid });
  api.close();
  const version = require('@grpc/grpc-js/package.json').version;
  const report = {
    client: `@grpc/grpc-js ${version} (Node ${process.versions.node})`,
    x509_svids: x509.svids.map((s) => ({ spiffe_id: s.spiffe_id, chain: splitDer(s.x509_svid).map(b64) })),
    x509_bundles: Object.fromEntries(Object.entries(bundles.bundles).map(([td, der]) => [td, b64(der)])),
    jwt_svids: jwt.svids.map((s) => ({ spiffe_id: s.spiffe_id, token: s.svid })),
    jwt_bundles: Object.fromEntries(
      Object.entries(jwtBundles.bundles).map(([td, jwks]) => [
        td,
        JSON.parse(Buffer.from(jwks).toString('utf8')).keys.map((k) => k.kid).sort(),
      ]),
    ),
    validated: validated.spiffe_id,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main(process.argv[2], process.argv[3]).catch((e) => {
  process.stderr.write(`grpc-js client failed: ${e.code !== undefined ? `code ${e.code}: ` : ''}${e.message}\n`);
  process.exit(1);
});
