'use strict';

// Zapier errors for the relay's answers. The words live in schemas/problems.json (the one
// catalogue the n8n node shares) and are rendered by relay-contract.js renderProblem with
// tool "zapier"; this file only decides which problem an answer is and which Zapier error
// carries it:
// - z.errors.ThrottledError for problems whose retry is "auto" (idempotency-in-flight,
//   token-changed, rate-limited): Zapier retries the step later by itself;
// - z.errors.Error otherwise: the step fails with the message in Zap history. Its code is the
//   problem's name ("forbidden", "http-redirect", ...).
//
// Any answer outside 200-299 is an error, whatever its body: a 3xx is never followed
// (middleware.js sends every request with redirect: 'manual') and never a success.

const contract = require('./generated/relay-contract');

const TOOL = 'zapier';
const PROBLEM_PREFIX = contract.PROBLEM_PREFIX;

// Where a redirect points, for a message: origin and path only (a login page's query string
// may carry state or tokens that do not belong in Zap history).
function describeLocation(location, requestUrl) {
  if (!location) {
    return null;
  }
  try {
    const url = new URL(location, requestUrl || undefined);
    return `${url.origin}${url.pathname}`;
  } catch (_e) {
    return String(location).split(/[?#]/)[0].slice(0, 200);
  }
}

// The Relay URL to suggest when a redirect only moves http:// to https:// on the same host:
// the request's own base (whatever precedes /v1/...) with https://.
function httpsSuggestion(requestUrl, location) {
  try {
    const from = new URL(requestUrl);
    const to = new URL(location, requestUrl);
    if (from.protocol !== 'http:' || to.protocol !== 'https:' || from.hostname !== to.hostname) {
      return null;
    }
    const v1 = from.pathname.indexOf('/v1/');
    const base = v1 >= 0 ? from.pathname.slice(0, v1) : '';
    return `https://${to.host}${base}`;
  } catch (_e) {
    return null;
  }
}

const header = (response, name) => (response.headers && response.headers.get ? response.headers.get(name) : null);

// The first words of a plain-text body, for a message (never HTML or JSON).
function plainTextSnippet(response) {
  if (!/^text\/plain\b/i.test(header(response, 'content-type') || '') || typeof response.content !== 'string') {
    return null;
  }
  const text = response.content.replace(/\s+/g, ' ').trim();
  if (!text) {
    return null;
  }
  return text.length > 100 ? `${text.slice(0, 100)}...` : text;
}

function problemOf(response) {
  const data = response && response.data;
  const name = contract.problemName(data);
  return name ? { ...data, name } : null;
}

function retryAfterSeconds(response) {
  const raw = header(response, 'retry-after');
  const seconds = raw === null || raw === undefined ? NaN : parseInt(raw, 10);
  return Number.isNaN(seconds) ? null : seconds;
}

// The user a request was about: named in a user_pattern refusal.
function requestUser(response) {
  const request = response.request || {};
  try {
    const body = typeof request.body === 'string' ? JSON.parse(request.body) : request.body;
    if (body && typeof body.user === 'string') {
      return body.user;
    }
  } catch (_e) {
    // not JSON: no user to name
  }
  try {
    return new URL(request.url).searchParams.get('user');
  } catch (_e) {
    return null;
  }
}

function originOf(url) {
  try {
    return new URL(url).origin;
  } catch (_e) {
    return null;
  }
}

const isPaywallsItself = (url) => {
  try {
    return /(^|\.)paywalls\.ai$/i.test(new URL(url).hostname);
  } catch (_e) {
    return false;
  }
};

// A Zapier error carrying the catalogue's message for a problem (a body or a client-only name).
function zapierError(z, problem, context) {
  const message = contract.renderProblem(problem, { tool: TOOL, ...context });
  const name = contract.problemName(problem) || (typeof problem === 'string' ? problem : problem.name);
  if (contract.problemRetry(problem) === 'auto') {
    return new z.errors.ThrottledError(message, context.retry_after || undefined);
  }
  return new z.errors.Error(message, name || 'unknown-problem', context.status || null);
}

// Which problem an answer outside 200-299 is, and the context its message needs.
function classify(response) {
  const { status } = response;
  const url = response.request && response.request.url;
  const context = {
    url,
    status,
    origin: originOf(url),
    user: requestUser(response),
    retry_after: retryAfterSeconds(response),
  };
  if (status >= 300 && status < 400) {
    const location = header(response, 'location');
    return {
      problem: 'http-redirect',
      context: {
        ...context,
        location: describeLocation(location, url),
        suggestion: location ? httpsSuggestion(url, location) : null,
      },
    };
  }
  const problem = problemOf(response);
  if (problem) {
    return { problem, context };
  }
  // Not the relay's problem+json: something else answered at the Relay URL.
  if (isPaywallsItself(url)) {
    return { problem: 'paywalls-itself', context };
  }
  if (status === 401) {
    // A proxy's own login in front of the relay, or a relay too old for problem+json: either way
    // the credentials were refused, and the fix is the connection.
    return { problem: 'unauthorized', context };
  }
  if (status === 404 || status === 405) {
    return { problem: 'no-relay-here', context };
  }
  if (status === 429) {
    return { problem: 'rate-limited', context };
  }
  if (status === 502 || status === 503 || status === 504) {
    return { problem: 'gateway-error', context };
  }
  return { problem: 'not-a-relay', context: { ...context, said: plainTextSnippet(response) } };
}

// The Zapier error for any relay answer outside 200-299 (null for a success).
function errorForResponse(z, response) {
  if (response.status >= 200 && response.status < 300) {
    return null;
  }
  const { problem, context } = classify(response);
  return zapierError(z, problem, context);
}

function describeBody(data, content) {
  if (data === null && typeof content === 'string' && content.trim() === 'null') {
    return 'JSON null';
  }
  if (data === undefined || data === null || data === '') {
    return 'no body';
  }
  if (Array.isArray(data)) {
    return 'a JSON array';
  }
  return typeof data === 'string' ? 'text' : `a JSON ${typeof data}`;
}

// The error for a 2xx that came without the relay's JSON body.
function unexpectedBodyError(z, response) {
  const url = response.request && response.request.url;
  let data = response.data;
  if (data === undefined && typeof response.content === 'string') {
    data = response.content;
  }
  return zapierError(z, 'not-json', { url, status: response.status, origin: originOf(url), got: describeBody(data, response.content) });
}

// The response's JSON object, or an error when a 2xx came without one (an HTML page, a
// bare string, an array, no body at all): never an empty success.
function requireObjectBody(z, response) {
  const data = response.data;
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    return data;
  }
  throw unexpectedBodyError(z, response);
}

// A client-side refusal (relay-contract.js ContractError) as a Zapier error: the step fails
// before anything is sent, with the client_errors text.
function contractError(z, error) {
  return new z.errors.Error(error.message, error.code, 400);
}

// A client-only case with no answer (connection settings, no connection, a timeout).
function clientError(z, name, context = {}) {
  return zapierError(z, name, context);
}

module.exports = {
  PROBLEM_PREFIX,
  TOOL,
  problemOf,
  classify,
  errorForResponse,
  requireObjectBody,
  unexpectedBodyError,
  contractError,
  clientError,
  describeLocation,
  httpsSuggestion,
  renderProblem: (problem, context) => contract.renderProblem(problem, { tool: TOOL, ...context }),
};
