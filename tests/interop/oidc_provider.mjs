// A real OpenID provider for the tests of `hallmark login`: node-oidc-provider
// (npm `oidc-provider`, an OpenID Certified implementation), served over HTTPS.
//
//   node oidc_provider.mjs --cert CERT.pem --key KEY.pem [--port N] [--issuer URL]
//                          [--device-interval SECONDS]
//
// --port 0 (the default) takes a free port; --issuer defaults to
// https://127.0.0.1:PORT. When it listens it prints one line, `READY <issuer>`.
// Test use only: accounts are fixed, any password is accepted, keys are made
// afresh at each start.
//
// Users (the login name is the account): alice, bob (email NOT verified),
// carol, dave (no groups). Scopes openid, email, profile and groups; the
// claims are put in the ID token itself.
// Clients, all public (no secret), native, PKCE required, loopback redirect
// http://127.0.0.1/callback on any port, authorization code and device code:
//   hallmark-cli        the CLI's client
//   other-app           another application of the same provider (a wrong audience)
//   hallmark-cli-short  like hallmark-cli, but its ID tokens live 2 seconds

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    issuer: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    'device-interval': { type: 'string', default: '1' },
  },
});
if (!args.cert || !args.key) {
  console.error('usage: oidc_provider.mjs --cert CERT.pem --key KEY.pem [--port N] [--issuer URL]');
  process.exit(2);
}

const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['eng'], name: 'Alice Example' },
  bob: { email: 'bob@example.com', email_verified: false, groups: ['eng'], name: 'Bob Example' },
  carol: { email: 'carol@example.com', email_verified: true, groups: ['eng', 'oncall'], name: 'Carol Example' },
  dave: { email: 'dave@example.com', email_verified: true, groups: [], name: 'Dave Example' },
};

const SHORT_LIVED_CLIENT = 'hallmark-cli-short';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

function nativeClient(clientId) {
  return {
    client_id: clientId,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    // For a native client the provider matches a loopback redirect whatever
    // its port (RFC 8252 section 7.3).
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: ['authorization_code', DEVICE_GRANT],
    response_types: ['code'],
  };
}

// Signing keys made at each start: an RSA key for RS256 (the clients'
// default) and a P-256 key, published in the JWKS.
function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, use: 'sig', alg: 'RS256', kid: `rsa-${randomBytes(4).toString('hex')}` },
    { ...ec, use: 'sig', alg: 'ES256', kid: `ec-${randomBytes(4).toString('hex')}` },
  ];
}

function configuration() {
  return {
    clients: ['hallmark-cli', 'other-app', SHORT_LIVED_CLIENT].map(nativeClient),
    jwks: { keys: signingKeys() },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    // Every claim of the granted scopes goes into the ID token, which is all
    // the Hallmark server reads (it calls no userinfo endpoint).
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true, successSource: deviceSuccess },
    },
    ttl: {
      IdToken: (ctx, token, client) => (client?.clientId === SHORT_LIVED_CLIENT ? 2 : 3600),
    },
    // Consent is not given in advance: for a native client the provider asks
    // the person every time (its default, after RFC 8252 section 8.6, since
    // anything can claim a loopback redirect), and the drivers confirm it.
    async findAccount(ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, ...account };
        },
      };
    },
  };
}

// oidc-provider takes `nonce` at the device authorization endpoint (it keeps
// it with the request's parameters) but does not carry it into the ID token
// the device code is redeemed for; the Hallmark server requires the nonce it
// handed out, so copy it onto the device code once the person has signed in.
async function deviceSuccess(ctx) {
  const code = ctx.oidc.deviceCode;
  if (code?.params?.nonce && !code.nonce) {
    code.nonce = code.params.nonce;
    await code.save();
  }
  ctx.type = 'html';
  ctx.body = '<!DOCTYPE html><html><head><title>Sign-in Success</title></head>'
    + '<body><p>Sign-in Success: you can close this page.</p></body></html>';
}

const server = https.createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) });
server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = args.issuer ?? `https://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  const interval = Number(args['device-interval']);
  // RFC 8628's `interval`: oidc-provider sends none (clients then wait 5 s);
  // a short one keeps the tests quick.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body?.device_code) {
      ctx.body.interval = interval;
    }
  });
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
