'use strict';

// The relay's answers (problem+json, schemas/problem.json) become Zapier errors a user can act
// on, with the words of schemas/problems.json (the catalogue the n8n node shares). Each case
// goes through the whole middleware pipeline (createAppTester).

const fs = require('fs');
const path = require('path');
const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { renderProblem } = require('../lib/errors');
const { PROBLEMS, PROBLEM_PREFIX } = require('../lib/generated/relay-contract');
const { BASE_URL, authData, problem, PROBLEM_HEADERS, errorOf } = require('./helpers');

const appTester = zapier.createAppTester(App);
const deposit = App.creates.deposit_credits.operation.perform;
const charge = App.creates.charge_user.operation.perform;
const balance = App.searches.find_user_balance.operation.perform;
const deposits = App.triggers.new_deposit.operation.perform;

const REPO = path.resolve(__dirname, '../..');
const SAFE = PROBLEMS.tools.safe_to_retry.zapier;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const depositInput = { user: 'acme:user_123', amount: '20', reference: 'in_1' };
const DEPOSIT_URL = `${BASE_URL}/v1/user/balance/deposit`;

const depositAnswers = (status, body, headers = PROBLEM_HEADERS) =>
  nock(BASE_URL).post('/v1/user/balance/deposit').reply(status, body, headers);

const depositError = () => errorOf(appTester(deposit, { authData: authData(), inputData: depositInput }));

// The problem types the relay can answer: problem.json's enum once it has one, and always
// every name relay/messages.py builds a Problem with.
const relayNames = () => {
  const source = fs.readFileSync(path.join(REPO, 'relay/messages.py'), 'utf8');
  return [...new Set([...source.matchAll(/Problem\(\s*[\w]+,\s*"([a-z-]+)"/g)].map((m) => m[1]))].sort();
};
const enumNames = () => {
  const schema = JSON.parse(fs.readFileSync(path.join(REPO, 'schemas/problem.json'), 'utf8'));
  const values = (schema.properties.type && schema.properties.type.enum) || [];
  return values.map((urn) => urn.slice(PROBLEM_PREFIX.length)).sort();
};
const catalogued = (source) =>
  Object.entries(PROBLEMS.problems)
    .filter(([, entry]) => entry.source === source)
    .map(([name]) => name)
    .sort();

describe('the catalogue covers every problem type', () => {
  it('every name relay/messages.py can produce has a relay entry in problems.json, and no other', () => {
    expect(relayNames().length).toBeGreaterThan(15);
    expect(catalogued('relay')).toEqual(relayNames());
  });

  it("problem.json's enum of types is the same set", () => {
    expect(enumNames()).toEqual(catalogued('relay'));
  });

  const statusOf = (entry) => {
    if (typeof entry.status === 'number') return entry.status;
    if (Array.isArray(entry.status)) return entry.status[0];
    return 400; // "4xx": upstream-rejected carries Paywalls' own 4xx
  };

  it.each(catalogued('relay'))('%s becomes a Zapier error with its catalogue message', async (name) => {
    const entry = PROBLEMS.problems[name];
    const status = statusOf(entry);
    const body = problem(name, status, { detail: `Detail of ${name}.` });
    depositAnswers(status, body, { ...PROBLEM_HEADERS, 'Retry-After': '2' });
    const error = await depositError();
    expect(error.name).toBe(entry.retry === 'auto' ? 'ThrottledError' : 'AppError');
    if (entry.retry !== 'auto') {
      expect(error.code).toBe(name);
      expect(error.status).toBe(status);
    }
    expect(error.message).toBe(
      renderProblem(body, { url: DEPOSIT_URL, status, origin: BASE_URL, user: 'acme:user_123', retry_after: 2 }),
    );
    expect(error.message).not.toMatch(/\{|\}|\[\[|undefined|null/);
  });

  it('an unknown problem type still fails the step, with the title and detail the relay sent', async () => {
    depositAnswers(418, problem('brand-new', 418, { title: 'Something new', detail: 'Do this.' }));
    const error = await depositError();
    expect(error.code).toBe('brand-new'); // the relay's own name, for whoever reads Zap history
    expect(error.message).toBe('Paywalls Relay answered HTTP 418: Something new (Do this.).');
  });
});

describe('validation (422)', () => {
  it('names the Zapier field, the relay message and the fix', async () => {
    depositAnswers(
      422,
      problem('validation', 422, {
        errors: [{ field: 'amount', pointer: '/amount', message: 'amount must be a positive decimal such as "10".' }],
      }),
    );
    const error = await depositError();
    expect(error.code).toBe('validation');
    expect(error.status).toBe(422);
    expect(error.message).toContain('Amount: amount must be a positive decimal such as "10".');
    expect(error.message).toContain('Enter or map a plain positive decimal into Amount');
    expect(error.message).toContain('A Formatter step can clean up a mapped price.');
    expect(error.message).toContain('nothing was sent to Paywalls');
  });

  it('lists several fields, naming metadata keys as Extra Metadata rows or Reference', async () => {
    depositAnswers(
      422,
      problem('validation', 422, {
        errors: [
          { field: 'user', pointer: '/user', message: 'user may contain only letters.' },
          { field: 'metadata.invoice_id', pointer: '/metadata/invoice_id', message: 'metadata.invoice_id is required by this token.' },
          { field: 'metadata.reference', pointer: '/metadata/reference', message: 'metadata.reference is required by this token.' },
        ],
      }),
    );
    const { message } = await depositError();
    expect(message).toContain('refused some fields of this step');
    expect(message).toContain('User: user may contain only letters.');
    expect(message).toContain('Extra Metadata > invoice_id: metadata.invoice_id is required by this token.');
    expect(message).toContain('Add a row with key "invoice_id" under Extra Metadata');
    expect(message).toContain('Reference: metadata.reference is required by this token.');
    expect(message).toContain('Fill in the Reference field of this step');
  });

  it('idempotency-key-reused explains Deduplicate On and names the fields', async () => {
    depositAnswers(422, problem('idempotency-key-reused', 422, { dedupe_on: ['user', 'metadata.reference'] }));
    const error = await depositError();
    expect(error.code).toBe('idempotency-key-reused');
    expect(error.message).toMatch(/^This deposit has the same Deduplicate On fields \(user, metadata\.reference\) as an earlier one/);
  });
});

describe('401: the token', () => {
  it('says invalid, expired or revoked, and how to reconnect', async () => {
    depositAnswers(401, problem('unauthorized', 401, { reason: 'revoked' }));
    const error = await depositError();
    expect(error.code).toBe('unauthorized');
    expect(error.message).toMatch(/invalid, expired or revoked \(the relay says: revoked\)/);
    expect(error.message).toContain('My Apps > Paywalls Relay > Reconnect');
  });

  it('even when a proxy answers 401 without a problem body', async () => {
    depositAnswers(401, 'Unauthorized', { 'Content-Type': 'text/plain' });
    const error = await depositError();
    expect(error.message).toBe(renderProblem('unauthorized'));
  });
});

describe('403: which limit refused', () => {
  it('operation: names the operation the token lacks', async () => {
    nock(BASE_URL)
      .post('/v1/user/charge')
      .reply(403, problem('forbidden', 403, { limit: 'operation', detail: 'This token is not allowed to charge (it may: deposit).' }), PROBLEM_HEADERS);
    const error = await errorOf(appTester(charge, { authData: authData(), inputData: depositInput }));
    expect(error.code).toBe('forbidden');
    expect(error.message).toMatch(/not allowed to charge users/);
    expect(error.message).toMatch(/"charge" operation/);
    expect(error.message).toContain('(Relay: This token is not allowed to charge (it may: deposit).)');
  });

  it('operation on the trigger names the ledger operation', async () => {
    nock(BASE_URL).get('/v1/relay/deposits').query(true).reply(403, problem('forbidden', 403, { limit: 'operation' }), PROBLEM_HEADERS);
    const error = await errorOf(appTester(deposits, { authData: authData(), inputData: {} }));
    expect(error.message).toMatch(/not allowed to list deposits.*"ledger" operation/);
  });

  it('max_amount: says the per-call maximum', async () => {
    depositAnswers(403, problem('forbidden', 403, { limit: 'max_amount', remaining: '50' }));
    const { message } = await depositError();
    expect(message).toMatch(/over this token's per-call maximum of 50/);
    expect(message).not.toContain('(Relay:'); // our words already carry the numbers
  });

  it('user_pattern: names the user', async () => {
    depositAnswers(403, problem('forbidden', 403, { limit: 'user_pattern' }));
    const { message } = await depositError();
    expect(message).toMatch(/may not act on user "acme:user_123"/);
  });

  it('daily_cap: says what remains and when it resets', async () => {
    depositAnswers(403, problem('forbidden', 403, { limit: 'daily_cap', remaining: '12.5' }));
    const { message } = await depositError();
    expect(message).toMatch(/^This deposit would go over this token's daily cap \(12\.5 remains today\)/);
    expect(message).toMatch(/replay this step after the cap resets at midnight UTC/);
  });

  it('monthly_cap: says what remains and when it resets', async () => {
    depositAnswers(403, problem('forbidden', 403, { limit: 'monthly_cap', remaining: '0' }));
    const { message } = await depositError();
    expect(message).toMatch(/would go over this token's monthly cap \(0 remains this month\)/);
    expect(message).toMatch(/1st of the month/);
  });

  it('user_pattern on a balance lookup names the queried user', async () => {
    nock(BASE_URL).get('/v1/user/balance').query({ user: 'other:9' }).reply(403, problem('forbidden', 403, { limit: 'user_pattern' }), PROBLEM_HEADERS);
    const { message } = await errorOf(appTester(balance, { authData: authData(), inputData: { user: 'other:9' } }));
    expect(message).toMatch(/may not act on user "other:9"/);
  });

  it('a limit this version does not know falls back to the generic words with the relay detail', async () => {
    depositAnswers(403, problem('forbidden', 403, { limit: 'weekly_cap', detail: 'Over the weekly cap.' }));
    const { message } = await depositError();
    expect(message).toBe('This relay token is not allowed to deposit credits (limit: weekly_cap). Ask your relay operator to check the token. (Relay: Over the weekly cap.)');
  });
});

describe('409 and 429: Zapier retries later', () => {
  it('409 in flight is a ThrottledError with Retry-After', async () => {
    depositAnswers(409, problem('idempotency-in-flight', 409), { ...PROBLEM_HEADERS, 'Retry-After': '3' });
    const error = await depositError();
    expect(error.name).toBe('ThrottledError');
    expect(error.delay).toBe(3);
    expect(error.message).toMatch(/still being processed.*wait 3 seconds\. Zapier will retry this step by itself/);
  });

  it('429 is a ThrottledError with our message (not the core default) and Retry-After', async () => {
    depositAnswers(429, problem('rate-limited', 429, { detail: 'This token is over its request rate limit.' }), {
      ...PROBLEM_HEADERS,
      'Retry-After': '7',
    });
    const error = await depositError();
    expect(error.name).toBe('ThrottledError');
    expect(error.delay).toBe(7);
    expect(error.message).toMatch(/Too many requests for this relay token/);
    expect(error.message).toContain('wait 7 seconds');
  });

  it('429 without a problem body or Retry-After still throttles', async () => {
    depositAnswers(429, 'slow down', { 'Content-Type': 'text/plain' });
    const error = await depositError();
    expect(error.name).toBe('ThrottledError');
    expect(error.delay == null).toBe(true);
  });

  it('token-changed (409) is retried by Zapier with its own message, not the in-flight one', async () => {
    depositAnswers(409, problem('token-changed', 409), { ...PROBLEM_HEADERS, 'Retry-After': '1' });
    const error = await depositError();
    expect(error.name).toBe('ThrottledError');
    expect(error.delay).toBe(1);
    expect(error.message).toMatch(/^The relay token's settings changed while this step ran/);
  });
});

describe('5xx: safe to replay', () => {
  it.each([502, 504])('%i upstream-ambiguous says the step is safe to replay', async (status) => {
    depositAnswers(status, problem('upstream-ambiguous', status, { detail: 'Paywalls timed out.' }));
    const error = await depositError();
    expect(error.code).toBe('upstream-ambiguous');
    expect(error.message).toMatch(/^Paywalls did not confirm this deposit: it may or may not have been applied\./);
    expect(error.message).toContain(SAFE);
    expect(error.message).toContain('(Relay: Paywalls timed out.)');
  });

  it('a 502 after Paywalls answered 503 says what the relay said, not "did not answer in time"', async () => {
    depositAnswers(502, problem('upstream-ambiguous', 502, { detail: 'Paywalls answered 503: busy. The deposit may or may not have been applied.' }));
    const error = await depositError();
    expect(error.message).toContain('(Relay: Paywalls answered 503: busy.)');
    expect(error.message).not.toMatch(/in time/);
  });

  it('a proxy 502 without a problem body: outcome unknown, safe to replay', async () => {
    depositAnswers(502, '<html>Bad Gateway</html>', { 'Content-Type': 'text/html' });
    const error = await depositError();
    expect(error.code).toBe('gateway-error');
    expect(error.message).toContain('so it is not known whether this deposit was applied');
    expect(error.message).toContain(SAFE);
  });

  it('503 unavailable: nothing was sent, safe to replay', async () => {
    depositAnswers(503, problem('unavailable', 503));
    const error = await depositError();
    expect(error.code).toBe('unavailable');
    expect(error.message).toMatch(/nothing was sent to Paywalls/);
    expect(error.message).toContain(SAFE);
  });

  it('outcome-unrecorded (503) never says nothing was sent: it may have been applied, replay is safe', async () => {
    depositAnswers(503, problem('outcome-unrecorded', 503), { ...PROBLEM_HEADERS, 'Retry-After': '5' });
    const error = await depositError();
    expect(error.message).toMatch(/^Paywalls was called, but the relay could not record its answer: this deposit may or may not have been applied\./);
    expect(error.message).toContain(SAFE);
    expect(error.message).not.toMatch(/nothing was sent/i);
  });

  it('upstream-misdirected (502) says nothing was applied and that the relay operator must fix it', async () => {
    depositAnswers(502, problem('upstream-misdirected', 502));
    const error = await depositError();
    expect(error.message).toMatch(/PAYWALLS_BASE_URL answered with a redirect, so nothing was applied/);
    expect(error.message).not.toMatch(/may or may not/);
  });
});

describe('other refusals', () => {
  it('upstream-rejected passes on what Paywalls said and warns a replay will fail again', async () => {
    depositAnswers(400, problem('upstream-rejected', 400, { detail: 'Paywalls answered 400: deposits need Default mode.' }));
    const error = await depositError();
    expect(error.code).toBe('upstream-rejected');
    expect(error.message).toMatch(/^Paywalls refused this deposit\. Running it again with the same fields is refused again/);
    expect(error.message).toContain('deposits need Default mode');
  });

  it('a 404 that is not from a relay points at the Relay URL', async () => {
    depositAnswers(404, '<html>Not Found</html>', { 'Content-Type': 'text/html' });
    const error = await depositError();
    expect(error.code).toBe('no-relay-here');
    expect(error.message).toContain(`No Paywalls Relay answered at ${BASE_URL} (HTTP 404)`);
  });
});
