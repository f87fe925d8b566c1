'use strict';

// End to end: the app's steps, through createAppTester and the full middleware
// pipeline, against a real Paywalls Relay and its sandbox upstream on 127.0.0.1
// (`paywalls-relay dev-stack`, started by ./harness.js). No mocked HTTP here.

const zapier = require('zapier-platform-core');

const App = require('../../index');
const { deriveKey } = require('../../lib/generated/relay-contract');
const { renderProblem } = require('../../lib/errors');
const { Harness } = require('./harness');
const { errorOf } = require('../helpers');

jest.setTimeout(60000);

const appTester = zapier.createAppTester(App);
const deposit = App.creates.deposit_credits.operation.perform;
const charge = App.creates.charge_user.operation.perform;
const balance = App.searches.find_user_balance.operation.perform;
const newDeposit = App.triggers.new_deposit.operation.perform;

const harness = new Harness();
const SAFE = renderProblem('upstream-ambiguous').split('applied. ')[1];
let main; // all four operations
let narrow; // deposit only, at most 5 per call, metadata.invoice_id required
let limited; // 1 request per minute

const auth = (token = main) => ({ baseUrl: harness.relayUrl, token: token.token });

const depositsOf = (state, user) => state.deposits.filter((d) => d.user === user);

beforeAll(async () => {
  await harness.start();
  main = await harness.createToken({ label: 'Zapier test', operations: ['deposit', 'charge', 'balance', 'ledger'] });
  narrow = await harness.createToken({
    label: 'Zapier narrow',
    operations: ['deposit'],
    max_amount: '5',
    required_metadata: ['invoice_id'],
  });
  limited = await harness.createToken({ label: 'Zapier limited', operations: ['balance'], rate_limit: '1/minute' });
}, 120000);

afterAll(async () => {
  await harness.stop();
});

describe('connection', () => {
  it('tests with GET /v1/relay/me and labels the connection with the token label', async () => {
    const me = await appTester(App.authentication.test, { authData: auth() });
    expect(me.id).toBe(main.id);
    expect(me.operations.sort()).toEqual(['balance', 'charge', 'deposit', 'ledger']);
    const label = await appTester(App.authentication.connectionLabel, { authData: auth(), inputData: me });
    expect(label).toBe('Zapier test (sandbox)'); // dev-stack runs the sandbox upstream
  });

  it('accepts the Relay URL with a trailing /v1/', async () => {
    const me = await appTester(App.authentication.test, {
      authData: { baseUrl: `${harness.relayUrl}/v1/`, token: main.token },
    });
    expect(me.label).toBe('Zapier test');
  });

  it('refuses a wrong token with the reconnect message', async () => {
    const error = await errorOf(
      appTester(App.authentication.test, { authData: { baseUrl: harness.relayUrl, token: 'pwr_not_a_real_token' } }),
    );
    expect(error.message).toMatch(/^Paywalls Relay refused the relay token: it is missing, invalid, expired or revoked/);
    expect(error.message).toContain('My Apps > Paywalls Relay > Reconnect');
  });
});

describe('Deposit Credits', () => {
  const input = {
    user: 'acme:e2e_deposit',
    amount: '20.00',
    reason: 'subscription_renewal',
    reference: 'in_e2e_1',
    extra_metadata: { plan: 'pro' },
  };
  const body = {
    user: input.user,
    amount: input.amount,
    metadata: { plan: 'pro', reason: 'subscription_renewal', reference: 'in_e2e_1' },
  };

  it('credits the sandbox once, and the same fields again are a replay', async () => {
    const first = await appTester(deposit, { authData: auth(), inputData: input });
    expect(first).toMatchObject({
      user: input.user,
      amount: '20',
      reason: 'subscription_renewal',
      reference: 'in_e2e_1',
      idempotency_key: deriveKey('deposit', body),
      replayed: false,
    });
    expect(first.new_balance).toEqual(expect.any(String));

    let state = await harness.state();
    expect(state.balances[input.user]).toBe('20');
    expect(depositsOf(state, input.user)).toHaveLength(1);
    expect(depositsOf(state, input.user)[0].metadata).toEqual(body.metadata);
    const depositCalls = state.calls.deposit;

    // Zapier replays the step with the same input: nothing is credited again.
    const second = await appTester(deposit, { authData: auth(), inputData: input });
    expect(second).toMatchObject({ replayed: true, idempotency_key: first.idempotency_key });
    expect(second.new_balance).toBe(first.new_balance);

    // The same amount typed differently is the same deposit.
    const third = await appTester(deposit, { authData: auth(), inputData: { ...input, amount: '20' } });
    expect(third.replayed).toBe(true);

    state = await harness.state();
    expect(state.balances[input.user]).toBe('20');
    expect(depositsOf(state, input.user)).toHaveLength(1);
    expect(state.calls.deposit).toBe(depositCalls);
  });

  it('the relay derives the same key as the app when none is sent (same contract, two implementations)', async () => {
    const raw = {
      user: 'acme:e2e_derive',
      amount: '1.50',
      metadata: { reason: '返金', reference: 'in_ü_1', seats: 5, nested: { b: 2, a: [1, 'x'] } },
    };
    const response = await fetch(`${harness.relayUrl}/v1/user/balance/deposit`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${main.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(raw),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('idempotency-key')).toBe(deriveKey('deposit', raw));
  });

  it('a new reference is a new deposit', async () => {
    const user = 'acme:e2e_two_refs';
    await appTester(deposit, { authData: auth(), inputData: { user, amount: '3', reference: 'ref_a' } });
    const b = await appTester(deposit, { authData: auth(), inputData: { user, amount: '3', reference: 'ref_b' } });
    expect(b.replayed).toBe(false);
    const state = await harness.state();
    expect(state.balances[user]).toBe('6');
    expect(depositsOf(state, user).map((d) => d.metadata.reference)).toEqual(['ref_a', 'ref_b']);
  });

  it('a bad amount surfaces the relay field message, and nothing reaches Paywalls', async () => {
    const before = (await harness.state()).calls.deposit || 0;
    const error = await errorOf(
      appTester(deposit, { authData: auth(), inputData: { user: 'acme:e2e_bad', amount: '$10', reference: 'r1' } }),
    );
    expect(error.name).toBe('AppError');
    expect(error.code).toBe('validation');
    expect(error.status).toBe(422);
    // The relay's own words for the field, behind the Zapier field name, then the fix.
    expect(error.message).toMatch(/Amount: amount must be a positive decimal such as "10" or "2\.50"/);
    expect(error.message).toContain('Enter or map a plain positive decimal into Amount');
    expect((await harness.state()).calls.deposit || 0).toBe(before);
  });

  it('a bad user names the User field', async () => {
    const error = await errorOf(
      appTester(deposit, { authData: auth(), inputData: { user: 'jane@example.com', amount: '1', reference: 'r_mail' } }),
    );
    expect(error.message).toMatch(/User: user may contain only letters/);
  });

  it('"User and Reference only" refuses a changed amount for the same reference', async () => {
    const user = 'acme:e2e_ref_only';
    const first = await appTester(deposit, {
      authData: auth(),
      inputData: { user, amount: '4', reference: 'in_ref_only', dedupe_on: 'reference' },
    });
    expect(first.idempotency_key).toBe(
      deriveKey('deposit', { user, amount: '4', metadata: { reference: 'in_ref_only' } }, ['user', 'metadata.reference']),
    );
    const error = await errorOf(
      appTester(deposit, {
        authData: auth(),
        inputData: { user, amount: '5', reference: 'in_ref_only', dedupe_on: 'reference' },
      }),
    );
    expect(error.code).toBe('idempotency-key-reused');
    // The token dedupes on every field, so the relay refuses the step's key (derived from user and
    // Reference) reused with another amount: same words, without the token's field list.
    expect(error.message).toMatch(/^This deposit has the same Deduplicate On fields as an earlier one/);
    expect((await harness.state()).balances[user]).toBe('4');
  });

  it('an ambiguous upstream failure says safe to replay, and the replay credits exactly once', async () => {
    const user = 'acme:e2e_ambiguous';
    const inputData = { user, amount: '7', reference: 'in_ambiguous' };
    // More failures than the relay retries: it gives up with 502 upstream-ambiguous.
    await harness.sandbox('POST', '/_sandbox/faults', { kind: 'status', status: 503, count: 50 });
    const error = await errorOf(appTester(deposit, { authData: auth(), inputData }));
    await harness.sandbox('POST', '/_sandbox/reset');
    expect(error.status).toBe(502);
    expect(error.message).toMatch(/may or may not have been applied/);
    expect(error.message).toContain(SAFE);

    // Paywalls credits but the connection drops before the answer: the relay retries
    // with the same upstream key, and the user replays with the same fields.
    await harness.sandbox('POST', '/_sandbox/faults', { kind: 'drop_after_credit', count: 1 });
    const replay = await appTester(deposit, { authData: auth(), inputData });
    expect(replay.idempotency_key).toBe(deriveKey('deposit', { user, amount: '7', metadata: { reference: 'in_ambiguous' } }));
    const again = await appTester(deposit, { authData: auth(), inputData });
    expect(again.replayed).toBe(true);
    const state = await harness.state();
    expect(depositsOf(state, user)).toHaveLength(1);
    expect(state.balances[user]).toBe('7');
  });
});

describe('token limits', () => {
  it('403 max_amount names the per-call maximum', async () => {
    const error = await errorOf(
      appTester(deposit, { authData: auth(narrow), inputData: { user: 'acme:e2e_narrow', amount: '6', reference: 'n1' } }),
    );
    expect(error.code).toBe('forbidden');
    expect(error.message).toMatch(/over this token's per-call maximum of 5/);
  });

  it('metadata the token requires is named as its Extra Metadata row', async () => {
    const error = await errorOf(
      appTester(deposit, { authData: auth(narrow), inputData: { user: 'acme:e2e_narrow', amount: '1', reference: 'n0' } }),
    );
    expect(error.code).toBe('validation');
    expect(error.message).toMatch(/Extra Metadata > invoice_id: metadata\.invoice_id is required by this token/);
    expect(error.message).toContain('Add a row with key "invoice_id" under Extra Metadata');
  });

  it('403 operation names the missing operation', async () => {
    const error = await errorOf(
      appTester(charge, { authData: auth(narrow), inputData: { user: 'acme:e2e_narrow', amount: '1', reference: 'n2' } }),
    );
    expect(error.message).toMatch(/not allowed to charge users.*"charge" operation/);
  });

  it('429 becomes a ThrottledError with the Retry-After delay', async () => {
    await appTester(balance, { authData: auth(limited), inputData: { user: 'acme:e2e_rate' } });
    const error = await errorOf(appTester(balance, { authData: auth(limited), inputData: { user: 'acme:e2e_rate' } }));
    expect(error.name).toBe('ThrottledError');
    expect(error.delay).toBeGreaterThan(0);
    expect(error.message).toMatch(/Too many requests for this relay token/);
  });

  it('a revoked token surfaces the reconnect message', async () => {
    const doomed = await harness.createToken({ label: 'Zapier revoked', operations: ['deposit'] });
    const inputData = { user: 'acme:e2e_revoked', amount: '1', reference: 'rv1' };
    await appTester(deposit, { authData: auth(doomed), inputData });
    await harness.revokeToken(doomed.id);
    const error = await errorOf(
      appTester(deposit, { authData: auth(doomed), inputData: { ...inputData, reference: 'rv2' } }),
    );
    expect(error.code).toBe('unauthorized');
    expect(error.status).toBe(401);
    expect(error.message).toContain('(the relay says: revoked)');
    expect(error.message).toContain('My Apps > Paywalls Relay > Reconnect');
  });
});

describe('Charge User', () => {
  it('charges, and success:false with the top-up message is data the Zap can branch on', async () => {
    const user = 'acme:e2e_charge';
    await harness.sandbox('PUT', `/_sandbox/balances/${encodeURIComponent(user)}`, { balance: '5' });

    const ok = await appTester(charge, { authData: auth(), inputData: { user, amount: '2', reason: 'usage', reference: 'job_1' } });
    expect(ok).toMatchObject({ success: true, replayed: false, user, amount: '2' });
    expect((await harness.state()).balances[user]).toBe('3');

    const declined = await appTester(charge, {
      authData: auth(),
      inputData: { user, amount: '10', reason: 'usage', reference: 'job_2' },
    });
    expect(declined.success).toBe(false);
    expect(declined.message).toMatch(/top up/i);
    expect((await harness.state()).balances[user]).toBe('3');
  });
});

describe('Find User Balance', () => {
  it('returns the balance the sandbox holds', async () => {
    const user = 'acme:e2e_balance';
    await harness.sandbox('PUT', `/_sandbox/balances/${encodeURIComponent(user)}`, { balance: '12.5' });
    const [result] = await appTester(balance, { authData: auth(), inputData: { user } });
    expect(result.id).toBe(user);
    expect(result.user).toBe(user);
    expect(result.balance_formatted).toMatch(/12\.50?/);
    expect(result.balance).toEqual(expect.any(String));
  });
});

describe('New Deposit trigger', () => {
  it('lists a new deposit first, with a stable id, reason and reference', async () => {
    const user = 'acme:e2e_trigger';
    const made = await appTester(deposit, {
      authData: auth(),
      inputData: { user, amount: '9', reason: 'goodwill', reference: 'tkt_1' },
    });
    const items = await appTester(newDeposit, { authData: auth(), inputData: {} });
    expect(items[0]).toMatchObject({
      user,
      amount: '9',
      reason: 'goodwill',
      reference: 'tkt_1',
      idempotency_key: made.idempotency_key,
      token_id: main.id,
      token_label: 'Zapier test',
    });
    expect(items[0].id).toEqual(expect.any(String));
    // Polling again gives the same id for the same deposit (Zapier dedupes on it).
    const again = await appTester(newDeposit, { authData: auth(), inputData: { user } });
    expect(again.map((i) => i.id)).toEqual([items[0].id]);
    // Newest first.
    const created = items.map((i) => i.created_at);
    expect([...created].sort().reverse()).toEqual(created);
  });
});
