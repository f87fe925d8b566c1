'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { deriveKey } = require('../lib/idempotency');
const { BASE_URL, TOKEN, authData, errorOf, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.creates.deposit_credits.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => {
  const pending = nock.pendingMocks();
  nock.cleanAll();
  expect(pending).toEqual([]);
});

const inputData = (overrides = {}) => ({
  user: 'acme:user_123',
  amount: '20.00',
  reason: 'subscription_renewal',
  reference: 'in_1Q2w3E4r',
  ...overrides,
});

// Records the request the step sent and answers like the relay.
const relayAnswers = (status, body, headers = {}) => {
  const seen = {};
  nock(BASE_URL)
    .post('/v1/user/balance/deposit')
    .reply(function reply(_uri, requestBody) {
      seen.headers = flatHeaders(this.req.headers);
      seen.body = requestBody;
      return [status, body, { 'Content-Type': 'application/json', ...headers }];
    });
  return seen;
};

describe('Deposit Credits', () => {
  it('sends user, amount and metadata with the derived Idempotency-Key and the token', async () => {
    const expectedBody = {
      user: 'acme:user_123',
      amount: '20.00',
      metadata: { plan: 'pro', reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
    };
    const key = deriveKey('deposit', expectedBody);
    const seen = relayAnswers(200, { balanceFormatted: '$25.00' }, {
      'Idempotency-Key': key,
      'Idempotent-Replayed': 'false',
    });

    const result = await appTester(perform, {
      authData: authData(),
      inputData: inputData({ extra_metadata: { plan: 'pro' } }),
    });

    expect(seen.body).toEqual(expectedBody);
    expect(seen.headers['idempotency-key']).toBe(key);
    expect(seen.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(seen.headers['content-type']).toMatch(/^application\/json/);
    expect(result).toEqual({
      user: 'acme:user_123',
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_1Q2w3E4r',
      metadata: expectedBody.metadata,
      new_balance: '$25.00',
      idempotency_key: key,
      replayed: false,
      sandbox: false,
    });
  });

  it('reports a replay and the key the relay used', async () => {
    relayAnswers(200, { balanceFormatted: '$25.00' }, {
      'Idempotency-Key': 'pwk1_from_relay',
      'Idempotent-Replayed': 'true',
      'X-Relay-Sandbox': 'true',
    });
    const result = await appTester(perform, { authData: authData(), inputData: inputData() });
    expect(result.replayed).toBe(true);
    expect(result.idempotency_key).toBe('pwk1_from_relay');
    expect(result.sandbox).toBe(true);
  });

  it('derives the same key for the same fields however they are typed', async () => {
    const a = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, { authData: authData(), inputData: inputData({ amount: '20' }) });
    const b = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, {
      authData: authData(),
      inputData: inputData({ amount: ' 20.0 ', user: ' acme:user_123 ', extra_metadata: { '': 'ignored', empty: '' } }),
    });
    expect(b.headers['idempotency-key']).toBe(a.headers['idempotency-key']);
    expect(b.body).toEqual({ ...a.body, amount: '20.0' });
  });

  it('gives a different key for another reference', async () => {
    const a = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, { authData: authData(), inputData: inputData() });
    const b = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, { authData: authData(), inputData: inputData({ reference: 'in_other' }) });
    expect(b.headers['idempotency-key']).not.toBe(a.headers['idempotency-key']);
  });

  it('lets Reason and Reference win over Extra Metadata rows of the same key', async () => {
    const seen = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, {
      authData: authData(),
      inputData: inputData({ extra_metadata: { reason: 'x', reference: 'y', campaign: 'bf' } }),
    });
    expect(seen.body.metadata).toEqual({ reason: 'subscription_renewal', reference: 'in_1Q2w3E4r', campaign: 'bf' });
  });

  it('sends no metadata when Reason, Reference and Extra Metadata are empty', async () => {
    const seen = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, {
      authData: authData(),
      inputData: { user: 'u1', amount: '1', reason: '', reference: '' },
    });
    expect(seen.body).toEqual({ user: 'u1', amount: '1' });
    expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', { user: 'u1', amount: '1' }));
  });

  describe('Deduplicate On', () => {
    it('"User and Reference only" keys on user and metadata.reference', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ dedupe_on: 'reference' }) });
      expect(seen.headers['idempotency-key']).toBe(
        deriveKey('deposit', seen.body, ['user', 'metadata.reference']),
      );
      expect(seen.headers['idempotency-key']).not.toBe(deriveKey('deposit', seen.body));
    });

    it('"User, Amount and Reference" keys on those three', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ dedupe_on: 'amount_reference' }) });
      expect(seen.headers['idempotency-key']).toBe(
        deriveKey('deposit', seen.body, ['user', 'amount', 'metadata.reference']),
      );
    });

    it('refuses a reference-based choice without a Reference, before calling the relay', async () => {
      const error = await errorOf(
        appTester(perform, { authData: authData(), inputData: inputData({ reference: '', dedupe_on: 'reference' }) }),
      );
      expect(error.message).toMatch(/Reference is empty/);
      expect(error.message).toMatch(/All fields/);
    });

    it('refuses an unknown choice', async () => {
      const error = await errorOf(
        appTester(perform, { authData: authData(), inputData: inputData({ dedupe_on: 'nothing' }) }),
      );
      expect(error.message).toMatch(/Deduplicate On "nothing" is not one of/);
    });
  });

  it('sends a non-decimal amount without a key, so the relay names the field', async () => {
    const seen = relayAnswers(200, { balanceFormatted: '1' });
    await appTester(perform, { authData: authData(), inputData: inputData({ amount: 'ten' }) });
    expect(seen.body.amount).toBe('ten');
    expect(seen.headers['idempotency-key']).toBeUndefined();
  });

  it('never sends a Paywalls secret key', async () => {
    const error = await errorOf(
      appTester(perform, { authData: authData({ token: 'sk-paywalls-abc' }), inputData: inputData() }),
    );
    expect(error.message).toMatch(/Paywalls secret key/);
    // afterEach checks that no request was pending, and nock refuses any unmocked call.
  });
});
