'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { deriveKey } = require('../lib/generated/relay-contract');
const { BASE_URL, authData, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.creates.charge_user.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const answers = (status, body, headers = {}) => {
  const seen = {};
  nock(BASE_URL)
    .post('/v1/user/charge')
    .query(true)
    .reply(function reply(uri, requestBody) {
      seen.headers = flatHeaders(this.req.headers);
      seen.body = requestBody;
      seen.query = Object.fromEntries(new URL(uri, BASE_URL).searchParams);
      return [status, body, { 'Content-Type': 'application/json', ...headers }];
    });
  return seen;
};

const input = { user: 'acme:user_123', amount: '2.50', reason: 'usage', reference: 'render-42' };
const body = { user: 'acme:user_123', amount: '2.50', metadata: { reason: 'usage', reference: 'render-42' } };

describe('Charge User', () => {
  it('posts to /v1/user/charge with a charge key (never the deposit key); snake_case output', async () => {
    const seen = answers(200, { success: true, message: 'Charged.' }, { 'Idempotent-Replayed': 'false' });
    const result = await appTester(perform, { authData: authData(), inputData: input });
    expect(seen.body).toEqual(body);
    expect(seen.headers['idempotency-key']).toBe(deriveKey('charge', body));
    expect(seen.headers['idempotency-key']).not.toBe(deriveKey('deposit', body));
    expect(result).toEqual({
      user: 'acme:user_123',
      amount: '2.5',
      reason: 'usage',
      reference: 'render-42',
      metadata: body.metadata,
      success: true,
      message: 'Charged.',
      replayed: false,
      sandbox: false,
      dry_run: false,
      idempotency_key: deriveKey('charge', body),
    });
  });

  it('a declined charge is data, not an error', async () => {
    answers(200, { success: false, message: 'Insufficient balance.' });
    const result = await appTester(perform, { authData: authData(), inputData: input });
    expect(result.success).toBe(false);
    expect(result.message).toBe('Insufficient balance.');
  });

  it('Dry Run answers would = charge, without success or message', async () => {
    const seen = answers(200, { dry_run: true, would: 'charge', idempotency_key: deriveKey('charge', body), remaining: {} });
    const result = await appTester(perform, { authData: authData(), inputData: { ...input, dry_run: 'true' } });
    expect(seen.query).toEqual({ dry_run: 'true' });
    expect(result).toMatchObject({ dry_run: true, would: 'charge', idempotency_key: deriveKey('charge', body) });
    expect(result).not.toHaveProperty('success');
    expect(result).not.toHaveProperty('message');
  });
});
