// The person's side of `hallmark login --device`:
//
//   node oidc_device.mjs URL [USER]
//
// URL is the verification URL `hallmark login` prints ("To sign in, open URL
// and enter the code CODE"; the provider's verification_uri_complete, which
// carries the code). It opens it, confirms the code, signs in as USER (default
// $OIDC_TEST_USER, else alice) with any password, confirms consent if asked,
// and exits 0 on the provider's success page. Set NODE_EXTRA_CA_CERTS to the
// provider's test CA.

import { Person, giveUpAfter } from './oidc_person.mjs';

const [url, user] = process.argv.slice(2);
if (!url) {
  console.error('usage: oidc_device.mjs URL [USER]');
  process.exit(2);
}
giveUpAfter(60_000, 'oidc_device.mjs: gave up after 60 s');

try {
  const person = new Person(user || process.env.OIDC_TEST_USER || 'alice');
  const { text } = await person.browse(url, () => false);
  if (!text.includes('Sign-in Success')) {
    console.error(`oidc_device.mjs: the sign-in did not succeed: ${text.slice(0, 500)}`);
    process.exit(1);
  }
  process.exit(0);
} catch (e) {
  console.error(`oidc_device.mjs: ${e.stack ?? e}`);
  process.exit(1);
}
