// A relying party of its own, for the tests of the Hallmark server's refusals:
//
//   node oidc_token.mjs ISSUER CLIENT_ID NONCE [USER]
//
// Runs the authorization code flow with PKCE (S256) at ISSUER (an
// oidc_provider.mjs) as the public client CLIENT_ID, with the nonce NONCE and
// the scopes `openid email profile groups`, signing in as USER (default alice)
// with any password and giving consent. The provider's redirect to the
// loopback `http://127.0.0.1:PORT/callback` is not followed (nothing listens
// there): the code is read from its URL, its `state` checked, and the code
// redeemed at the token endpoint. Prints the ID token, and nothing else, on
// stdout; the steps go to stderr. Exits 1 when any step fails. Set
// NODE_EXTRA_CA_CERTS to the provider's test CA.
//
// What it obtains is a genuine ID token of that provider, for that client and
// nonce: the tests hand it to POST /v1/login where `hallmark login` would hand
// its own (another issuer, another audience, an expired or a replayed token).

import { createHash, randomBytes } from 'node:crypto';

import { Person, giveUpAfter } from './oidc_person.mjs';

const [issuer, clientId, nonce, user] = process.argv.slice(2);
if (!issuer || !clientId || !nonce) {
  console.error('usage: oidc_token.mjs ISSUER CLIENT_ID NONCE [USER]');
  process.exit(2);
}
giveUpAfter(30_000, 'oidc_token.mjs: gave up after 30 s');

const SCOPES = 'openid email profile groups';
const base64url = (bytes) => Buffer.from(bytes).toString('base64url');

/// JSON from `url` (or a POST of the form `form` to it), or an error naming it.
async function json(url, form) {
  const init = form
    ? { method: 'POST', body: new URLSearchParams(form).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' } }
    : {};
  const response = await fetch(url, init);
  const text = await response.text();
  if (response.status !== 200) {
    throw new Error(`${init.method ?? 'GET'} ${url} -> ${response.status}: ${text.slice(0, 300)}`);
  }
  return JSON.parse(text);
}

try {
  const discovery = await json(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  if (discovery.issuer !== issuer) {
    throw new Error(`the discovery document names issuer ${discovery.issuer}, not ${issuer}`);
  }
  // Any port: the provider takes a loopback redirect on any port for a
  // native client (RFC 8252 section 7.3), and the redirect is never requested.
  const redirectUri = `http://127.0.0.1:${1024 + (randomBytes(2).readUInt16BE() % 60000)}/callback`;
  const verifier = base64url(randomBytes(32));
  const state = base64url(randomBytes(16));
  const authorize = new URL(discovery.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: SCOPES,
    state,
    nonce,
    code_challenge: base64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
  })) {
    authorize.searchParams.set(k, v);
  }

  const isLoopbackRedirect = (url) => url.protocol === 'http:' && url.hostname === '127.0.0.1';
  const person = new Person(user || 'alice');
  const { url, text, reachedEnd } = await person.browse(authorize.href, isLoopbackRedirect, { requestEnd: false });
  if (!reachedEnd) {
    throw new Error(`ended without reaching the loopback redirect: ${text.slice(0, 300)}`);
  }
  const error = url.searchParams.get('error');
  if (error) {
    throw new Error(`the provider answered ${error}: ${url.searchParams.get('error_description') ?? ''}`);
  }
  if (url.searchParams.get('state') !== state) {
    throw new Error('the redirect carries another state');
  }
  const code = url.searchParams.get('code');
  if (!code) {
    throw new Error('the redirect carries no code');
  }

  const tokens = await json(discovery.token_endpoint, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    client_id: clientId,
    code_verifier: verifier,
  });
  if (typeof tokens.id_token !== 'string') {
    throw new Error('the token response has no id_token');
  }
  console.error(`oidc_token.mjs: an ID token for ${clientId} as ${person.user}`);
  process.stdout.write(`${tokens.id_token}\n`, () => process.exit(0));
} catch (e) {
  console.error(`oidc_token.mjs: ${e.stack ?? e}`);
  process.exit(1);
}
