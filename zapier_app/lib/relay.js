'use strict';

// The connection's Relay URL, normalised: surrounding spaces, trailing slashes and a
// pasted "/v1" suffix are dropped; a bare host gets https://.

const { messages } = require('./errors');

function normalizeBaseUrl(raw) {
  let url = String(raw === undefined || raw === null ? '' : raw).trim();
  if (!url) {
    return { error: messages.missingBaseUrl() };
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    url = `https://${url}`;
  }
  let parsed;
  try {
    parsed = new URL(url);
  } catch (_e) {
    return { error: messages.badBaseUrl(raw) };
  }
  if (!['http:', 'https:'].includes(parsed.protocol) || !parsed.hostname || parsed.search || parsed.hash) {
    return { error: messages.badBaseUrl(raw) };
  }
  const pathname = parsed.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  return { url: `${parsed.origin}${pathname}` };
}

module.exports = { normalizeBaseUrl };
