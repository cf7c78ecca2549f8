// The person at the browser, for the tests of `hallmark login`: a cookie jar
// over plain `fetch` that follows redirects and submits the pages' forms the
// way a person would (the login form as a given user, any password; consent
// and device confirmation pages by their only form). Used by oidc_browser.mjs,
// oidc_device.mjs and oidc_token.mjs; it understands the pages of oidc_provider.mjs (the
// dev interactions of node-oidc-provider), not HTML in general.
//
// HTTPS to the provider is trusted through NODE_EXTRA_CA_CERTS (the test CA).

const MAX_STEPS = 30;

/// Decodes the HTML entities the provider's pages use in attribute values.
function unescapeHtml(text) {
  return text
    .replace(/&#(\d+);/g, (_, n) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_, n) => String.fromCodePoint(parseInt(n, 16)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    out[m[1].toLowerCase()] = unescapeHtml(m[2] ?? m[3] ?? '');
  }
  return out;
}

/// The first form of `html`: its action, method and input fields.
function firstForm(html) {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return undefined;
  const form = attributes(m[1]);
  const fields = [];
  for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
    const a = attributes(input[1]);
    if (a.name) fields.push([a.name, a.value ?? '', (a.type ?? 'text').toLowerCase()]);
  }
  return { action: form.action ?? '', method: (form.method ?? 'get').toUpperCase(), fields };
}

/// Cookies by host, path and name, sent where their path applies.
class CookieJar {
  #cookies = new Map();

  store(url, response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.toLowerCase();
        if (key === 'path' && v.startsWith('/')) path = v;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) < Date.now()) expired = true;
      }
      const id = `${url.host}|${path}|${name}`;
      if (expired) this.#cookies.delete(id);
      else this.#cookies.set(id, { host: url.host, path, name, value });
    }
  }

  header(url) {
    const applies = (c) => c.host === url.host
      && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`));
    return [...this.#cookies.values()].filter(applies).map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

export class Person {
  #jar = new CookieJar();

  constructor(user, password = 'any-password') {
    this.user = user;
    this.password = password;
  }

  async #request(url, method, body) {
    const headers = { 'user-agent': 'hallmark-test-person' };
    const cookie = this.#jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, body, headers, redirect: 'manual' });
    this.#jar.store(url, response);
    return response;
  }

  /// Starts at `start` and goes on until `isEnd(url)` says a URL is where
  /// the person's part ends (it is requested, and its response returned with
  /// `reachedEnd` true), or a page has no form left to submit (its response
  /// returned with `reachedEnd` false). With `{ requestEnd: false }` the end
  /// URL is not requested but returned as `url` (`response` and `text`
  /// undefined): a redirect to a listener that is not there.
  async browse(start, isEnd, { requestEnd = true } = {}) {
    let url = new URL(start);
    let method = 'GET';
    let body;
    for (let step = 0; step < MAX_STEPS; step += 1) {
      if (!requestEnd && isEnd(url)) {
        console.error(`${method} ${url.origin}${url.pathname} (end, not requested)`);
        return { url, reachedEnd: true };
      }
      const response = await this.#request(url, method, body);
      const shown = `${method} ${url.origin}${url.pathname}`;
      if (isEnd(url)) {
        console.error(`${shown} -> ${response.status} (end)`);
        return { response, text: await response.text(), reachedEnd: true };
      }
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        console.error(`${shown} -> ${response.status}`);
        url = new URL(location, url);
        method = 'GET';
        body = undefined;
        continue;
      }
      const text = await response.text();
      if (response.status !== 200) {
        throw new Error(`${shown} -> ${response.status}: ${text.slice(0, 500)}`);
      }
      const form = firstForm(text);
      if (!form) {
        console.error(`${shown} -> ${response.status} (no form: done)`);
        return { response, text, reachedEnd: false };
      }
      const fields = new URLSearchParams();
      for (const [name, value, type] of form.fields) {
        if (name === 'login') fields.append(name, this.user);
        else if (type === 'password') fields.append(name, this.password);
        else fields.append(name, value);
      }
      const what = fields.get('prompt')
        ?? (fields.has('confirm') ? 'device confirmation' : fields.has('user_code') ? 'user code' : 'next');
      console.error(`${shown} -> ${response.status} (submitting the ${what} form)`);
      url = new URL(form.action || url.href, url);
      method = form.method;
      if (method === 'POST') {
        body = fields.toString();
      } else {
        for (const [k, v] of fields) url.searchParams.append(k, v);
        body = undefined;
      }
    }
    throw new Error(`still not done after ${MAX_STEPS} requests`);
  }
}

/// Ends the process with `message` after `ms`, so that a driver stuck on an
/// unexpected page never hangs a test.
export function giveUpAfter(ms, message) {
  setTimeout(() => {
    console.error(message);
    process.exit(3);
  }, ms).unref();
}
