// A man in the middle between `hallmark login` and the Hallmark server, for
// the tests of the login's refusals through the CLI:
//
//   node login_proxy.mjs --target http://HOST:PORT [--start-set FIELD=VALUE]...
//                        [--login-set FIELD=VALUE | FIELD=@FILE]... [--login-delay MS]
//
// Listens on 127.0.0.1 (a free port), prints `READY http://127.0.0.1:PORT`,
// and passes every request on to the Hallmark server at --target and its
// answer back, except that:
//   --start-set   sets FIELD in the JSON answer of POST /v1/login/start (the
//                 CLI then signs in at another `issuer`, or as another
//                 `client_id`, than the server named);
//   --login-set   sets FIELD in the JSON body of POST /v1/login (a replayed
//                 `id_token` or `login_id`); @FILE reads the value from FILE,
//                 without surrounding whitespace;
//   --login-delay holds POST /v1/login back for MS milliseconds before
//                 passing it on (a token that expires on the way).
// Each request and each change is logged to stderr, by field name only: the
// values (ID tokens) are never printed.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    target: { type: 'string' },
    'start-set': { type: 'string', multiple: true, default: [] },
    'login-set': { type: 'string', multiple: true, default: [] },
    'login-delay': { type: 'string', default: '0' },
  },
});
if (!args.target?.startsWith('http://')) {
  console.error('usage: login_proxy.mjs --target http://HOST:PORT [--start-set F=V]... [--login-set F=V|F=@FILE]... '
    + '[--login-delay MS]');
  process.exit(2);
}

/// `FIELD=VALUE` or `FIELD=@FILE` pairs as [field, value].
function settings(list) {
  return list.map((item) => {
    const eq = item.indexOf('=');
    if (eq < 1) {
      console.error(`login_proxy.mjs: expected FIELD=VALUE, got ${item}`);
      process.exit(2);
    }
    const value = item.slice(eq + 1);
    return [item.slice(0, eq), value.startsWith('@') ? readFileSync(value.slice(1), 'utf8').trim() : value];
  });
}
const startSet = settings(args['start-set']);
const loginSet = settings(args['login-set']);
const loginDelay = Number(args['login-delay']);

/// `body` (JSON text) with `changes` applied, or `body` as it is when it is
/// not a JSON object.
function rewrite(body, changes, what) {
  if (changes.length === 0) return body;
  let value;
  try {
    value = JSON.parse(body);
  } catch {
    return body;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return body;
  for (const [field, v] of changes) value[field] = v;
  console.error(`login_proxy.mjs: set ${changes.map(([f]) => f).join(', ')} in ${what}`);
  return JSON.stringify(value);
}

async function readBody(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const server = http.createServer(async (request, response) => {
  try {
    const path = request.url ?? '/';
    const post = (p) => request.method === 'POST' && path === p;
    let body = await readBody(request);
    if (post('/v1/login')) {
      body = rewrite(body, loginSet, 'the login request');
      if (loginDelay > 0) {
        console.error(`login_proxy.mjs: holding the login request back for ${loginDelay} ms`);
        await new Promise((resolve) => { setTimeout(resolve, loginDelay); });
      }
    }
    const headers = {};
    for (const name of ['content-type', 'authorization', 'if-match']) {
      if (request.headers[name]) headers[name] = request.headers[name];
    }
    const method = request.method ?? 'GET';
    const upstream = await fetch(new URL(path, args.target), {
      method,
      headers,
      body: method === 'GET' || method === 'HEAD' ? undefined : body,
    });
    let answer = await upstream.text();
    console.error(`login_proxy.mjs: ${method} ${path} -> ${upstream.status}`);
    if (post('/v1/login/start') && upstream.status === 200) {
      answer = rewrite(answer, startSet, 'the login start answer');
    }
    response.writeHead(upstream.status, {
      'content-type': upstream.headers.get('content-type') ?? 'application/octet-stream',
      'content-length': Buffer.byteLength(answer),
    });
    response.end(answer);
  } catch (e) {
    console.error(`login_proxy.mjs: ${e.stack ?? e}`);
    response.writeHead(502, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: `login_proxy.mjs: ${e.message ?? e}` }));
  }
});

server.listen(0, '127.0.0.1', () => {
  console.log(`READY http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
