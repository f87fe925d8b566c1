'use strict';

// Every message a Zapier user can see, in one place, and the mapping from the
// relay's answers (application/problem+json, schemas/problem.json) to Zapier errors.
//
// How Zapier treats each kind (see README.md, "What the errors mean"):
// - z.errors.Error: the step fails with this message in Zap history;
// - z.errors.ThrottledError: Zapier retries the step later by itself (409, 429).
//
// Any answer outside 200-299 is an error, whatever its body: a 3xx is never followed
// (middleware.js sends every request with redirect: 'manual') and never a success.

const PROBLEM_PREFIX = 'urn:paywalls-relay:problem:';

const RECONNECT =
  'Ask your relay operator for a new relay token (`paywalls-relay tokens create`), then reconnect: ' +
  'in Zapier open My Apps > Paywalls Relay > Reconnect, and paste the new token.';

const RELAY_URL_FIX =
  'Reconnect (My Apps > Paywalls Relay > Reconnect) and enter the Relay URL exactly as your relay operator gave it, ' +
  'starting with https:// (e.g. https://relay.example.com, without /v1).';

const SAFE_TO_REPLAY =
  'It is safe to replay this step: a replay sends the same Idempotency-Key, so the relay and ' +
  'Paywalls will not apply it twice.';

// The Zapier field behind each body field the relay may name in a validation error.
const FIELD_LABELS = {
  user: 'User',
  amount: 'Amount',
  metadata: 'Extra Metadata',
  'metadata.reason': 'Reason',
  'metadata.reference': 'Reference',
  'Idempotency-Key': 'Deduplicate On',
  since: 'Since',
  limit: 'Limit',
  cursor: 'Cursor',
};

// What to do in Zapier, per field, after the relay's own message.
const FIELD_FIXES = {
  user: 'Map a pseudonymous Paywalls user id such as acme:user_123 into User (letters, digits and _ - . : only).',
  amount: 'Enter or map a plain positive decimal into Amount, such as 10 or 2.50 (no currency symbol, no thousands separator). A Formatter step can clean up a mapped price.',
  metadata: 'Remove or shorten entries under Extra Metadata.',
};

function fieldLabel(field) {
  if (FIELD_LABELS[field]) {
    return FIELD_LABELS[field];
  }
  if (typeof field === 'string' && field.startsWith('metadata.')) {
    return `Extra Metadata > ${field.slice('metadata.'.length)}`;
  }
  return field || 'the request';
}

function fieldFix(field) {
  if (FIELD_FIXES[field]) {
    return FIELD_FIXES[field];
  }
  if (typeof field === 'string' && field.startsWith('metadata.')) {
    const key = field.slice('metadata.'.length);
    if (key === 'reference') {
      return 'Fill in the Reference field of this step (map the source event id into it).';
    }
    if (key === 'reason') {
      return 'Pick a Reason.';
    }
    return `Add a row with key "${key}" under Extra Metadata and map a value into it.`;
  }
  return null;
}

// The operation a request was for, from its path: used to name it in messages.
const OPERATIONS = [
  { path: '/v1/user/balance/deposit', op: 'deposit', verb: 'deposit credits', noun: 'deposit' },
  { path: '/v1/user/charge', op: 'charge', verb: 'charge users', noun: 'charge' },
  { path: '/v1/user/balance', op: 'balance', verb: 'read balances', noun: 'balance lookup' },
  { path: '/v1/relay/deposits', op: 'ledger', verb: 'list deposits', noun: 'deposit list' },
  { path: '/v1/relay/me', op: null, verb: 'check the connection', noun: 'connection test' },
];

function operationOf(url) {
  let pathname = '';
  try {
    pathname = new URL(url).pathname.replace(/\/+$/, '');
  } catch (_e) {
    pathname = '';
  }
  return (
    OPERATIONS.find((o) => pathname.endsWith(o.path)) || {
      path: pathname,
      op: null,
      verb: 'do this',
      noun: 'call',
    }
  );
}

function withDetail(message, detail) {
  return detail ? `${message} (Relay: ${detail})` : message;
}

// The relay's first sentence: for details whose rest repeats what our message says.
function firstSentence(detail) {
  if (!detail) {
    return detail;
  }
  const match = /^.*?[.!?](?=\s|$)/.exec(detail);
  return match ? match[0] : detail;
}

// Where a redirect points, for a message: origin and path only (a login page's query
// string may carry state or tokens that do not belong in Zap history).
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

// The first words of a plain-text body, for a message (never HTML or JSON).
function plainTextSnippet(response) {
  const type = (response.headers && response.headers.get && response.headers.get('content-type')) || '';
  if (!/^text\/plain\b/i.test(type) || typeof response.content !== 'string') {
    return null;
  }
  const text = response.content.replace(/\s+/g, ' ').trim();
  if (!text) {
    return null;
  }
  return text.length > 100 ? `${text.slice(0, 100)}...` : text;
}

const messages = {
  RECONNECT,
  SAFE_TO_REPLAY,
  RELAY_URL_FIX,

  // --- connection -------------------------------------------------------------------------
  missingBaseUrl: () =>
    'The connection has no Relay URL. Reconnect and enter the address of your Paywalls Relay, e.g. https://relay.example.com.',
  badBaseUrl: (value) =>
    `The Relay URL "${value}" is not a web address. Reconnect and enter the address of your Paywalls Relay, ` +
    'starting with https://, e.g. https://relay.example.com (without /v1).',
  missingToken: () => `The connection has no relay token. ${RECONNECT}`,
  secretKeyPasted: () =>
    'This looks like a Paywalls secret key (sk-...), not a relay token. Never put the Paywalls secret key into Zapier: ' +
    'ask your relay operator for a scoped relay token (it starts with pwr_) and reconnect with it.',
  notARelay: (status, url) =>
    `No Paywalls Relay answered at ${url}${status ? ` (HTTP ${status})` : ''}. Check the Relay URL of your connection: ` +
    'it is the address of your relay, e.g. https://relay.example.com, without /v1. Then reconnect.',
  // A 3xx: never followed, never a success.
  redirected: ({ status, origin, location, suggestion }) =>
    `The Relay URL of this connection redirects: ${origin} answered HTTP ${status}` +
    `${location ? ` and points to ${location}` : ' (a redirect without a Location)'}. Zapier does not follow ` +
    'redirects to the relay (a login page or another server could answer in its place), so this step failed. ' +
    `${suggestion ? `Reconnect with ${suggestion} as the Relay URL. ` : ''}${RELAY_URL_FIX} ${SAFE_TO_REPLAY}`,
  // Any other status that did not come from a Paywalls Relay (no problem+json body).
  notARelayAnswer: (status, origin, said) =>
    `${origin} answered HTTP ${status}${said ? ` ("${said}")` : ''}, which is not an answer of a Paywalls Relay, ` +
    'so this step failed. Check the Relay URL of your connection; if it is right, something in front of the relay ' +
    `(a proxy or load balancer) refused the request: ask your relay operator. ${SAFE_TO_REPLAY}`,
  // A 2xx without the JSON object the relay always sends.
  unexpectedBody: (status, operation) =>
    `Paywalls Relay answered HTTP ${status} without the expected body` +
    `${['deposit', 'charge'].includes(operation.op) ? `, so it is not known whether this ${operation.noun} was applied` : ''}. ` +
    `Check that the Relay URL of your connection points at your Paywalls Relay. ${RELAY_URL_FIX} ${SAFE_TO_REPLAY}`,

  // --- token ------------------------------------------------------------------------------
  unauthorized: (reason) =>
    'Paywalls Relay refused the relay token: it is invalid, expired or revoked' +
    `${reason ? ` (the relay says: ${reason})` : ''}. ${RECONNECT}`,

  forbidden: ({ limit, remaining, detail, operation, user }) => {
    switch (limit) {
      case 'operation':
        return withDetail(
          `This relay token is not allowed to ${operation.verb}. Ask your relay operator for a token with the ` +
            `"${operation.op || 'needed'}" operation, then reconnect the Paywalls Relay account in Zapier.`,
          detail,
        );
      case 'max_amount':
        return `The amount is over this token's per-call maximum${remaining ? ` of ${remaining}` : ''}. Nothing was sent to ` +
          "Paywalls. Lower the Amount, or ask your relay operator to raise the token's maximum.";
      case 'user_pattern':
        return `This token may not act on user ${user ? `"${user}"` : 'this user'}: it only covers users matching its user ` +
          'pattern. Check what is mapped into User, or ask your relay operator for a token that covers these users.';
      case 'daily_cap':
        return `This ${operation.noun} would go over this token's daily cap${remaining ? ` (${remaining} remains today)` : ''}. ` +
          'Nothing was sent to Paywalls. Lower the Amount, replay this step after the cap resets at midnight UTC, or ask ' +
          'your relay operator to raise the cap.';
      case 'monthly_cap':
        return `This ${operation.noun} would go over this token's monthly cap${remaining ? ` (${remaining} remains this month)` : ''}. ` +
          'Nothing was sent to Paywalls. Lower the Amount, replay this step after the cap resets on the 1st of the month ' +
          '(UTC), or ask your relay operator to raise the cap.';
      default:
        return withDetail(
          `This relay token is not allowed to ${operation.verb}${limit ? ` (limit: ${limit})` : ''}. Ask your relay ` +
            'operator to check the token.',
          detail,
        );
    }
  },

  // --- input ------------------------------------------------------------------------------
  validation: (errors, detail) => {
    if (!Array.isArray(errors) || errors.length === 0) {
      return withDetail('Paywalls Relay refused the input of this step. Nothing was sent to Paywalls.', detail);
    }
    const lines = errors.map((e) => {
      const fix = fieldFix(e.field);
      return `${fieldLabel(e.field)}: ${e.message}${fix ? ` ${fix}` : ''}`;
    });
    return `Paywalls Relay refused ${errors.length === 1 ? 'a field' : 'some fields'} of this step; nothing was sent to Paywalls. ${lines.join(' | ')}`;
  },
  referenceRequiredForDedupe: () =>
    'Deduplicate On is set to use the Reference, but Reference is empty. Map the source event id (e.g. the Stripe ' +
    'invoice id) into Reference, or set Deduplicate On to "All fields".',
  keyReused: (noun) =>
    `This ${noun} has the same Deduplicate On fields as an earlier one but different other fields, so the relay ` +
    'refused it rather than guess. If it really is a new one, map a different Reference; if it is a replay of the ' +
    'earlier one, send the same Amount, Reason and Extra Metadata as before.',

  // --- retry later (ThrottledError) -------------------------------------------------------
  inFlight: (seconds) =>
    `The same step is still being processed by the relay (a duplicate run). Zapier will retry it${
      seconds ? ` in about ${seconds} seconds` : ' shortly'
    } and get the first run's answer: nothing is applied twice.`,
  rateLimited: (seconds, detail) =>
    withDetail(
      `Too many requests for this relay token right now. Zapier will retry this step${
        seconds ? ` in about ${seconds} seconds` : ' later'
      }.`,
      detail,
    ),

  // --- upstream and server ----------------------------------------------------------------
  ambiguous: (noun, detail) =>
    withDetail(
      `Paywalls did not confirm this ${noun}: it may or may not have been applied. ${SAFE_TO_REPLAY}`,
      firstSentence(detail),
    ),
  outcomeUnrecorded: (noun) =>
    `Paywalls was called, but the relay could not record its answer: this ${noun} may or may not have been applied. ` +
    `${SAFE_TO_REPLAY} (If nobody replays it, the relay operator completes it with \`paywalls-relay ledger resolve\`.)`,
  upstreamMisdirected: () =>
    "Paywalls Relay cannot reach Paywalls: the relay's PAYWALLS_BASE_URL answered with a redirect, so nothing was " +
    `applied. Ask your relay operator to fix the relay's PAYWALLS_BASE_URL, then replay this step. ${SAFE_TO_REPLAY}`,
  tokenChanged: (seconds) =>
    "The relay token's settings changed while this step ran, and nothing was sent to Paywalls. Zapier will retry it" +
    `${seconds ? ` in about ${seconds} seconds` : ' shortly'}.`,
  unavailable: (detail) =>
    withDetail(`Paywalls Relay is temporarily unavailable; nothing was sent to Paywalls. ${SAFE_TO_REPLAY}`, detail),
  serverError: (status, detail) =>
    withDetail(`Paywalls Relay answered with an error (HTTP ${status}). ${SAFE_TO_REPLAY}`, detail),
  upstreamRejected: (noun, detail) =>
    withDetail(
      `Paywalls refused this ${noun}. Replaying the same step will be refused again: fix the cause first.`,
      detail,
    ),
  badRequest: (detail) =>
    withDetail('Paywalls Relay could not read the request this step sent. Nothing was sent to Paywalls.', detail),
  unexpected: (status, detail) =>
    withDetail(`Paywalls Relay answered HTTP ${status}.`, detail),
};

function problemOf(response) {
  const data = response && response.data;
  if (data && typeof data === 'object' && typeof data.type === 'string' && data.type.startsWith(PROBLEM_PREFIX)) {
    return { ...data, name: data.type.slice(PROBLEM_PREFIX.length) };
  }
  return null;
}

function retryAfterSeconds(response) {
  const raw = response.headers && response.headers.get ? response.headers.get('retry-after') : null;
  const seconds = raw === null || raw === undefined ? NaN : parseInt(raw, 10);
  return Number.isNaN(seconds) ? null : seconds;
}

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

function originOf(response) {
  try {
    return new URL(response.request.url).origin;
  } catch (_e) {
    return 'the Relay URL';
  }
}

// The Zapier error for any relay answer outside 200-299 (null for a success).
function errorForResponse(z, response) {
  const { status } = response;
  if (status >= 200 && status < 300) {
    return null;
  }
  const problem = problemOf(response);
  const name = problem ? problem.name : null;
  const detail = problem && typeof problem.detail === 'string' ? problem.detail : null;
  const requestUrl = response.request && response.request.url;
  const operation = operationOf(requestUrl);
  const error = (message, code) => new z.errors.Error(message, code || name || `http_${status}`, status);

  if (status >= 300 && status < 400) {
    const location = response.headers && response.headers.get ? response.headers.get('location') : null;
    return error(
      messages.redirected({
        status,
        origin: originOf(response),
        location: describeLocation(location, requestUrl),
        suggestion: location ? httpsSuggestion(requestUrl, location) : null,
      }),
      'redirected',
    );
  }
  if (status < 200) {
    return error(messages.notARelayAnswer(status, originOf(response), null), 'not-a-relay');
  }

  if (status === 401) {
    return error(messages.unauthorized(problem && problem.reason), 'unauthorized');
  }
  if (status === 403 && name === 'forbidden') {
    return error(
      messages.forbidden({
        limit: problem.limit,
        remaining: problem.remaining,
        detail,
        operation,
        user: requestUser(response),
      }),
    );
  }
  if (name === 'token-changed') {
    const seconds = retryAfterSeconds(response);
    return new z.errors.ThrottledError(messages.tokenChanged(seconds), seconds);
  }
  if (name === 'token-identity-locked' || name === 'namespace-rule-differs') {
    return error(messages.unexpected(status, detail));
  }
  if (status === 409 || name === 'idempotency-in-flight') {
    const seconds = retryAfterSeconds(response);
    return new z.errors.ThrottledError(messages.inFlight(seconds), seconds);
  }
  if (status === 429) {
    const seconds = retryAfterSeconds(response);
    return new z.errors.ThrottledError(messages.rateLimited(seconds, detail), seconds);
  }
  if (name === 'validation') {
    return error(messages.validation(problem.errors, detail));
  }
  if (name === 'idempotency-key-reused') {
    return error(messages.keyReused(operation.noun));
  }
  if (name === 'upstream-rejected') {
    return error(messages.upstreamRejected(operation.noun, detail));
  }
  if (['malformed-body', 'body-too-large', 'unsupported-media-type'].includes(name)) {
    return error(messages.badRequest(detail));
  }
  if (name === 'upstream-misdirected') {
    return error(messages.upstreamMisdirected());
  }
  if (name === 'outcome-unrecorded') {
    return error(messages.outcomeUnrecorded(operation.noun));
  }
  if (status === 502 || status === 504) {
    // upstream-ambiguous, upstream-unavailable, or a proxy in front of the relay: the
    // outcome is unknown, and a replay with the same key is safe either way.
    return error(messages.ambiguous(operation.noun, detail), name || 'upstream-ambiguous');
  }
  if (status === 503) {
    return error(messages.unavailable(detail), name || 'unavailable');
  }
  if (status >= 500 && status < 600) {
    return error(messages.serverError(status, detail));
  }
  if (!problem && (status === 404 || status === 405)) {
    return error(messages.notARelay(status, originOf(response)), 'not-a-relay');
  }
  if (!problem) {
    return error(messages.notARelayAnswer(status, originOf(response), plainTextSnippet(response)), 'not-a-relay');
  }
  return error(messages.unexpected(status, detail));
}

// The error for a 2xx that came without the relay's JSON body.
function unexpectedBodyError(z, response) {
  const operation = operationOf(response.request && response.request.url);
  return new z.errors.Error(messages.unexpectedBody(response.status, operation), 'unexpected-body', response.status);
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

module.exports = {
  PROBLEM_PREFIX,
  FIELD_LABELS,
  messages,
  fieldLabel,
  operationOf,
  problemOf,
  errorForResponse,
  requireObjectBody,
  unexpectedBodyError,
  describeLocation,
  httpsSuggestion,
};
