'use strict';

// The connection's Relay URL, and every call to the relay.

const contract = require('./generated/relay-contract');
const { clientError, contractError } = require('./errors');

// The Relay URL, normalised: surrounding spaces, trailing slashes and a pasted "/v1" suffix
// are dropped; a bare host gets https://. {url} or {problem, value} (a problems.json name).
function normalizeBaseUrl(raw) {
  let url = String(raw === undefined || raw === null ? '' : raw).trim();
  if (!url) {
    return { problem: 'missing-url' };
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    url = `https://${url}`;
  }
  let parsed;
  try {
    parsed = new URL(url);
  } catch (_e) {
    return { problem: 'bad-url', value: String(raw).trim().slice(0, 200) };
  }
  if (!['http:', 'https:'].includes(parsed.protocol) || !parsed.hostname || parsed.search || parsed.hash) {
    return { problem: 'bad-url', value: String(raw).trim().slice(0, 200) };
  }
  const pathname = parsed.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  return { url: `${parsed.origin}${pathname}` };
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);

// z.request, with a failure to reach the relay at all (refused, unknown host, timeout) turned
// into the catalogue's message instead of a bare "FetchError". Errors the middleware raised
// from an answer pass through unchanged.
async function relayRequest(z, bundle, options) {
  try {
    return await z.request(options);
  } catch (error) {
    const cause = error && (error.cause || error);
    const code = (cause && (cause.code || cause.errno)) || (error && error.code);
    const isTimeout = TIMEOUT_CODES.has(code) || (error && (error.type === 'request-timeout' || error.name === 'AbortError'));
    if (!isTimeout && !NETWORK_CODES.has(code)) {
      throw error;
    }
    const { url } = normalizeBaseUrl(bundle.authData && bundle.authData.baseUrl);
    const origin = url ? new URL(url).origin : null;
    const op = typeof options.url === 'string' ? options.url : '';
    throw clientError(z, isTimeout ? 'timeout' : 'network', { origin, url: url ? url + op : op, cause: code || null });
  }
}

// The request relay-contract.js builds from a step's inputs; a refusal (ContractError) becomes the
// step's Zapier error before anything is sent.
function requestFor(z, op, inputData) {
  try {
    return contract.buildRequest(op, inputData || {});
  } catch (error) {
    if (error instanceof contract.ContractError) {
      throw contractError(z, error);
    }
    throw error;
  }
}

module.exports = { normalizeBaseUrl, relayRequest, requestFor };
