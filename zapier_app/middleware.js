'use strict';

// HTTP middleware for every z.request the app makes.
//
// beforeRequest:
// - a relative URL ("/v1/relay/me") is resolved against the connection's Relay URL;
// - the relay token goes in "Authorization: Bearer"; a Paywalls secret key is refused
//   before it ever leaves Zapier;
// - Accept asks for JSON (and problem+json for errors);
// - redirects are never followed (redirect: 'manual'): a 3xx comes back as it is.
// afterResponse: any answer outside 200-299 becomes a Zapier error whose message says what
// to do (lib/errors.js, words from schemas/problems.json): relay errors (application/problem+json), and also a 3xx, 1xx or a
// bare 4xx/5xx from a proxy, login page or load balancer answering at the Relay URL.

const { version } = require('./package.json');
const { errorForResponse, clientError } = require('./lib/errors');
const { normalizeBaseUrl } = require('./lib/relay');

// Keeps "Zapier" in it: core uses that to recognise (and not double-log) its own requests.
const USER_AGENT = `Zapier paywalls-relay-zapier/${version}`;

const resolveRelayUrl = (request, z, bundle) => {
  if (typeof request.url === 'string' && request.url.startsWith('/')) {
    const { url, problem, value } = normalizeBaseUrl(bundle.authData && bundle.authData.baseUrl);
    if (problem) {
      throw clientError(z, problem, { value });
    }
    request.url = url + request.url;
  }
  return request;
};

const includeToken = (request, z, bundle) => {
  const token = String((bundle.authData && bundle.authData.token) || '').trim();
  if (!token) {
    throw clientError(z, 'missing-token');
  }
  if (/^sk-/i.test(token)) {
    throw clientError(z, 'secret-key-pasted');
  }
  request.headers = request.headers || {};
  request.headers.Authorization = `Bearer ${token}`;
  return request;
};

const includeHeaders = (request) => {
  request.headers = request.headers || {};
  request.headers.accept = 'application/json, application/problem+json';
  request.headers['user-agent'] = USER_AGENT;
  return request;
};

// A redirect at the Relay URL (http:// to https://, a login page, another host) must fail
// the step with a message naming it, not be followed: a followed 301/302 turns the POST
// into a GET, a followed 307/308 re-sends the body and token to wherever it points, and
// either can end in a 2xx that is not the relay's answer. The app only talks to the relay.
const noRedirects = (request) => {
  request.redirect = 'manual';
  return request;
};

const handleRelayErrors = (response, z) => {
  const error = errorForResponse(z, response);
  if (error) {
    throw error;
  }
  return response;
};

const befores = [resolveRelayUrl, includeToken, includeHeaders, noRedirects];
const afters = [handleRelayErrors];

module.exports = { befores, afters, USER_AGENT };
