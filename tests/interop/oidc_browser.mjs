// The person's browser for `hallmark login`'s authorization code flow:
//
//   BROWSER=/path/to/wrapper hallmark login ...   (the wrapper runs: node oidc_browser.mjs "$@")
//
// Called, as $BROWSER is, with the authorization URL as its last argument. It
// signs in at the provider (oidc_provider.mjs) as $OIDC_TEST_USER (default
// alice) with any password, confirms consent if asked, and finally requests
// the loopback redirect (http://127.0.0.1:PORT/callback?...) the provider sends
// it to, as a browser would. Exits 0 when `hallmark login` answered that
// request with 200. Set NODE_EXTRA_CA_CERTS to the provider's test CA.

import { Person, giveUpAfter } from './oidc_person.mjs';

const start = process.argv.at(-1);
if (!start || process.argv.length < 3) {
  console.error('usage: oidc_browser.mjs URL');
  process.exit(2);
}
giveUpAfter(60_000, 'oidc_browser.mjs: gave up after 60 s');

const isLoopbackRedirect = (url) => url.protocol === 'http:' && url.hostname === '127.0.0.1';
try {
  const person = new Person(process.env.OIDC_TEST_USER || 'alice');
  const { response, text, reachedEnd } = await person.browse(start, isLoopbackRedirect);
  if (!reachedEnd) {
    console.error(`oidc_browser.mjs: ended without reaching the loopback redirect: ${text.slice(0, 300)}`);
    process.exit(1);
  }
  if (response.status !== 200) {
    console.error(`oidc_browser.mjs: the loopback redirect answered ${response.status}: ${text.slice(0, 300)}`);
    process.exit(1);
  }
  process.exit(0);
} catch (e) {
  console.error(`oidc_browser.mjs: ${e.stack ?? e}`);
  process.exit(1);
}
