'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { deriveKey, clientErrorText, CONTRACT } = require('../lib/generated/relay-contract');
const { BASE_URL, TOKEN, authData, errorOf, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.creates.deposit_credits.operation.perform;
const inputFields = App.creates.deposit_credits.operation.inputFields;

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
    .query(true)
    .reply(function reply(uri, requestBody) {
      seen.headers = flatHeaders(this.req.headers);
      seen.body = requestBody;
      seen.query = Object.fromEntries(new URL(uri, BASE_URL).searchParams);
      return [status, body, { 'Content-Type': 'application/json', ...headers }];
    });
  return seen;
};

// A refusal before any call: nock refuses every unmocked request, and afterEach checks none was made.
const refused = async (overrides) => errorOf(appTester(perform, { authData: authData(), inputData: inputData(overrides) }));

describe('Deposit Credits', () => {
  it('sends user, amount and metadata with the derived Idempotency-Key and the token; snake_case output', async () => {
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
    expect(seen.query).toEqual({});
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
      dry_run: false,
    });
    // The one output style: every key is snake_case.
    expect(Object.keys(result).every((k) => /^[a-z]+(_[a-z]+)*$/.test(k))).toBe(true);
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
      inputData: inputData({ amount: ' 20.0 ', user: ' acme:user_123 ', extra_metadata: { ' ': '', empty: '   ' } }),
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

  describe('Reference is required', () => {
    it.each([[''], ['   '], [undefined], [null]])('refuses Reference %j before calling the relay', async (reference) => {
      const error = await refused({ reference });
      expect(error.message).toBe(clientErrorText('reference-required'));
      expect(error.code).toBe('reference-required');
    });

    it('is required in the field definition', () => {
      expect(inputFields.find((f) => f.key === 'reference').required).toBe(true);
    });
  });

  describe('metadata clash is refused, never silently overridden', () => {
    it.each([['reference'], ['Reference'], [' REFERENCE '], ['reason'], ['Reason']])(
      'a row named %j while its field is set',
      async (key) => {
        const error = await refused({ extra_metadata: { [key]: 'x', campaign: 'bf' } });
        const label = key.trim().toLowerCase() === 'reason' ? 'Reason' : 'Reference';
        expect(error.code).toBe('metadata-clash');
        expect(error.message).toBe(clientErrorText('metadata-clash', { key: key.trim(), label }));
      },
    );

    it('a row named reason is fine while Reason is empty, and keeps its value', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ reason: '', extra_metadata: { reason: 'x' } }) });
      expect(seen.body.metadata).toEqual({ reason: 'x', reference: 'in_1Q2w3E4r' });
    });

    it('a row with a value and a blank key is refused; a blank row is dropped', async () => {
      expect((await refused({ extra_metadata: { '  ': 'x' } })).code).toBe('metadata-blank-key');
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ extra_metadata: { '  ': '  ' } }) });
      expect(Object.keys(seen.body.metadata)).toEqual(['reason', 'reference']);
    });

    it('two rows whose keys differ only by spaces are refused', async () => {
      expect((await refused({ extra_metadata: { plan: 'a', ' plan ': 'b' } })).code).toBe('metadata-duplicate-key');
    });
  });

  describe('Deduplicate On', () => {
    const presets = CONTRACT.dedupe_presets.filter((p) => p.fields);

    it('offers the four presets of the contract', () => {
      const field = inputFields.find((f) => f.key === 'dedupe_on');
      expect(field.choices.map((c) => c.value)).toEqual(['all', 'reference', 'amount_reference', 'custom']);
      expect(field.default).toBe('all');
      expect(field.altersDynamicFields).toBe(true);
    });

    it.each(presets.map((p) => [p.value, p.fields]))('%s keys on %j', async (value, fields) => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ dedupe_on: value }) });
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', seen.body, fields));
    });

    it('custom keys on Custom Dedupe Fields, trimmed, empty segments and duplicates dropped', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, {
        authData: authData(),
        inputData: inputData({
          dedupe_on: 'custom',
          custom_dedupe_fields: ' user ,, metadata.invoice_id ,user,',
          extra_metadata: { invoice_id: 'in_9' },
        }),
      });
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', seen.body, ['user', 'metadata.invoice_id']));
    });

    it.each([
      ['', 'custom-dedupe-fields-empty'],
      [' , ,', 'custom-dedupe-fields-empty'],
      [undefined, 'custom-dedupe-fields-empty'],
      ['user, metadata.invoice id', 'custom-dedupe-field-invalid'],
      ['user, metadata. reference', 'custom-dedupe-field-invalid'],
      ['User', 'custom-dedupe-field-invalid'],
      ['reference', 'custom-dedupe-field-invalid'],
      ['metadata..x', 'custom-dedupe-field-invalid'],
      [['user'], 'field-not-text'],
    ])('custom with %j is refused (%s)', async (custom, code) => {
      const error = await refused({ dedupe_on: 'custom', custom_dedupe_fields: custom });
      expect(error.code).toBe(code);
      expect(error.message).not.toMatch(/[{}]/);
    });

    it('Custom Dedupe Fields shows only when Deduplicate On is custom', () => {
      const dynamic = inputFields.filter((f) => typeof f === 'function');
      expect(dynamic).toHaveLength(1);
      expect(dynamic[0](null, { inputData: { dedupe_on: 'custom' } }).map((f) => f.key)).toEqual(['custom_dedupe_fields']);
      for (const value of ['all', 'reference', 'amount_reference', undefined]) {
        expect(dynamic[0](null, { inputData: { dedupe_on: value } })).toEqual([]);
      }
    });

    it('ignores Custom Dedupe Fields left over from an earlier choice', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ dedupe_on: 'all', custom_dedupe_fields: 'nonsense here' }) });
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', seen.body));
    });

    it('refuses an unknown choice, naming the choices', async () => {
      const error = await refused({ dedupe_on: 'nothing' });
      expect(error.message).toBe('Deduplicate On "nothing" is not one of: all, reference, amount_reference, custom.');
    });
  });

  describe('Dry Run', () => {
    const dryAnswer = {
      dry_run: true,
      would: 'credit',
      idempotency_key: 'pwk1_dry',
      remaining: { daily_cap: '80' },
      request: { user: 'acme:user_123', amount: '20' },
    };

    it.each([[true], ['true'], ['yes'], [' TRUE ']])('%j sends ?dry_run=true and answers what would happen', async (dryRun) => {
      const seen = relayAnswers(200, dryAnswer, { 'X-Relay-Sandbox': 'true' });
      const result = await appTester(perform, { authData: authData(), inputData: inputData({ dry_run: dryRun }) });
      expect(seen.query).toEqual({ dry_run: 'true' });
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', seen.body));
      expect(result).toEqual({
        user: 'acme:user_123',
        amount: '20',
        reason: 'subscription_renewal',
        reference: 'in_1Q2w3E4r',
        metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r' },
        idempotency_key: 'pwk1_dry',
        replayed: false,
        sandbox: true,
        dry_run: true,
        would: 'credit',
        remaining: { daily_cap: '80' },
      });
    });

    it.each([[false], ['false'], [''], [undefined], ['no']])('%j runs for real', async (dryRun) => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      const result = await appTester(perform, { authData: authData(), inputData: inputData({ dry_run: dryRun }) });
      expect(seen.query).toEqual({});
      expect(result.dry_run).toBe(false);
    });

    it('refuses a value that is neither on nor off', async () => {
      expect((await refused({ dry_run: 'maybe' })).code).toBe('dry-run-invalid');
    });

    it('says loudly when a relay ignored the dry run and applied it', async () => {
      relayAnswers(200, { balanceFormatted: '25.00' }, { 'Idempotency-Key': 'pwk1_real' });
      const error = await refused({ dry_run: true });
      expect(error.code).toBe('dry-run-ignored');
      expect(error.message).toMatch(/WAS applied/);
      expect(error.message).toContain('pwk1_real');
    });
  });

  describe('odd inputs', () => {
    it.each([
      ['an amount the derivation refuses', { amount: '1.5e2' }, '1.5e2'],
      ['a leading dot', { amount: '.5' }, '.5'],
      ['a sign', { amount: '-3.10' }, '-3.10'],
      ['zero', { amount: '0' }, '0'],
      ['words', { amount: 'ten' }, 'ten'],
      ['nothing', { amount: '   ' }, ''],
      ['a list', { amount: ['10'] }, ['10']],
    ])('%s: sent without a key, so the relay names amount', async (_what, overrides, sent) => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      const result = await appTester(perform, { authData: authData(), inputData: inputData(overrides) });
      expect(seen.body.amount).toEqual(sent);
      expect(seen.headers['idempotency-key']).toBeUndefined();
      expect(result.idempotency_key).toBeNull();
    });

    it('a JSON number amount is sent as the number, with the key of its decimal text', async () => {
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ amount: 20 }) });
      expect(seen.body.amount).toBe(20);
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', { ...seen.body, amount: '20' }));
    });

    it.each([
      ['user', { a: 1 }],
      ['user', ['a', 'b']],
      ['reference', ['in_1']],
      ['reason', { x: 1 }],
    ])('%s as %j is refused as not text', async (field, value) => {
      const error = await refused({ [field]: value });
      expect(error.code).toBe('field-not-text');
    });

    it('a numeric Reference becomes its text (the same key as typed text)', async () => {
      const a = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ reference: 42 }) });
      const b = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, { authData: authData(), inputData: inputData({ reference: '42' }) });
      expect(a.body.metadata.reference).toBe('42');
      expect(a.headers['idempotency-key']).toBe(b.headers['idempotency-key']);
    });

    it('unicode, 10k-character values and whitespace-only user go to the relay unchanged (it validates)', async () => {
      const long = 'x'.repeat(10000);
      const seen = relayAnswers(200, { balanceFormatted: '1' });
      await appTester(perform, {
        authData: authData(),
        inputData: inputData({ user: '   ', reference: 'café', extra_metadata: { note: long, 'ключ': '値' } }),
      });
      expect(seen.body.user).toBe('');
      expect(seen.body.metadata).toEqual({ note: long, 'ключ': '値', reason: 'subscription_renewal', reference: 'café' });
      expect(seen.headers['idempotency-key']).toBe(deriveKey('deposit', seen.body));
    });

    it('Extra Metadata that is not rows is refused', async () => {
      expect((await refused({ extra_metadata: 'plan=pro' })).code).toBe('extra-metadata-invalid');
    });
  });

  it('never sends a Paywalls secret key', async () => {
    const error = await errorOf(
      appTester(perform, { authData: authData({ token: 'sk-paywalls-abc' }), inputData: inputData() }),
    );
    expect(error.message).toMatch(/Paywalls secret key/);
  });
});
