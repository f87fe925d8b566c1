'use strict';

// End to end: the instant triggers through createAppTester against a real relay and its sandbox
// (`paywalls-relay dev-stack`, ./harness.js). A receiver on 127.0.0.1 stands in for Zapier's
// target URL: performSubscribe registers it, the relay POSTs the events of real deposits and
// charges to it, perform turns what arrived into the trigger's item, performList reads the
// stored events, performUnsubscribe removes the hook. No mocked HTTP here.

const http = require('http');
const zapier = require('zapier-platform-core');

const App = require('../../index');
const EVENTS = require('../../../schemas/events-contract.json');
const { Harness } = require('./harness');
const { errorOf } = require('../helpers');

jest.setTimeout(90000);

const appTester = zapier.createAppTester(App);
const trigger = (key) => App.triggers[key].operation;
const deposit = App.creates.deposit_credits.operation.perform;
const charge = App.creates.charge_user.operation.perform;

const harness = new Harness();
let token; // deposit, charge, events
let noEvents; // deposit only
let receiver;

// A stand-in for Zapier's hook URLs: records each POST by path; a path can be told to answer 410.
function startReceiver() {
  const received = [];
  const gone = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      received.push({ path: req.url, headers: req.headers, text, body: JSON.parse(text) });
      res.writeHead(gone.has(req.url) ? 410 : 200, { 'Content-Type': 'application/json' });
      res.end('{"status":"success"}');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const base = `http://127.0.0.1:${server.address().port}`;
      resolve({ server, received, gone, url: (path) => `${base}${path}` });
    });
  });
}

// The POSTs that reached a path, waiting (up to 30 s) until `count` have arrived.
async function arrivals(path, count, predicate = () => true) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const got = receiver.received.filter((r) => r.path === path && predicate(r.body));
    if (got.length >= count || Date.now() > deadline) {
      return got;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const auth = (t = token) => ({ baseUrl: harness.relayUrl, token: t.token });
const forUser = (user) => (body) => body.data && (body.data.externalUserId === user || body.data.user === user);

async function relayHooks() {
  const response = await fetch(`${harness.relayUrl}/v1/relay/hooks`, { headers: { Authorization: `Bearer ${token.token}` } });
  return (await response.json()).data;
}

beforeAll(async () => {
  await harness.start();
  receiver = await startReceiver();
  token = await harness.createToken({ label: 'Zapier hooks', operations: ['deposit', 'charge', 'events', 'topup'] });
  noEvents = await harness.createToken({ label: 'Zapier no events', operations: ['deposit'] });
}, 120000);

afterAll(async () => {
  await harness.stop();
  if (receiver) {
    receiver.server.close();
  }
});

describe('instant triggers against a live relay', () => {
  const user = 'e2e:hooks_alice';
  const subscriptions = {};

  it('performSubscribe registers each trigger with the relay', async () => {
    for (const key of ['deposit_created', 'balance_depleted', 'charge_failed']) {
      const hook = await appTester(trigger(key).performSubscribe, {
        authData: auth(),
        inputData: { user },
        targetUrl: receiver.url(`/${key}`),
      });
      expect(hook.id).toMatch(/^hook_/);
      subscriptions[key] = hook;
    }
    const listed = await relayHooks();
    expect(listed.map((h) => h.id).sort()).toEqual(Object.values(subscriptions).map((h) => h.id).sort());
    expect(listed.find((h) => h.id === subscriptions.charge_failed.id)).toMatchObject({
      target_url: receiver.url('/charge_failed'),
      event_types: ['paywall.balance.charge.failed'],
      filter: { user },
    });
  });

  it('a deposit, a charge to zero and a declined charge each reach their trigger, once, as its item', async () => {
    const step = (perform, amount, reference) =>
      appTester(perform, { authData: auth(), inputData: { user, amount, reference, reason: 'other' } });
    await step(deposit, '3', 'e2e_hooks_dep_1');
    await step(charge, '3', 'e2e_hooks_chg_1');
    const declined = await step(charge, '1', 'e2e_hooks_chg_2');
    expect(declined.success).toBe(false);

    const cases = [
      ['deposit_created', 'paywall.balance.deposit.created', (e) => expect(e.data.amount).toBe('3')],
      // The README's flow: Balance Depleted -> Get Top-up Link with User = the trigger's User.
      [
        'balance_depleted',
        'paywall.balance.depleted',
        async (e) => {
          const link = await appTester(App.creates.get_topup_link.operation.perform, { authData: auth(), inputData: { user: e.user } });
          expect(link).toEqual({
            user,
            topup_url: `https://sandbox.paywalls.invalid/topup?user=${encodeURIComponent(user)}`,
            sandbox: true,
          });
        },
      ],
      ['charge_failed', 'paywall.balance.charge.failed', (e) => expect(e.data.errorCode).toBe('insufficient_funds')],
    ];
    for (const [key, type, check] of cases) {
      const [arrived, ...more] = await arrivals(`/${key}`, 1, forUser(user));
      expect(arrived).toBeDefined();
      expect(more).toEqual([]);
      expect(arrived.body.type).toBe(type);
      expect(arrived.headers['x-relay-event-id']).toBe(arrived.body.id);
      const items = await appTester(trigger(key).perform, { authData: auth(), inputData: { user }, cleanedRequest: arrived.body });
      expect(items).toHaveLength(1);
      expect(items[0]).toMatchObject({ id: arrived.body.id, type, user });
      await check(items[0]);
      // Every output the contract promises for events of this origin is in the live item.
      const origin = items[0].source === 'relay' ? 'relay' : 'paywalls';
      const spec = Object.values(EVENTS.triggers).find((t) => t.zapier && t.zapier.key === key);
      for (const output of spec.outputs.filter((o) => !o.when || o.when === origin)) {
        const value = output.path.split('.').reduce((v, k) => (v == null ? undefined : v[k]), items[0]);
        expect([origin, output.path, value !== undefined]).toEqual([origin, output.path, true]);
      }
    }
  });

  it('performList reads the stored events of its type for that user, newest first', async () => {
    const items = await appTester(trigger('deposit_created').performList, { authData: auth(), inputData: { user } });
    expect(items.length).toBeGreaterThanOrEqual(1);
    expect(items.every((i) => i.type === 'paywall.balance.deposit.created' && i.user === user)).toBe(true);
    const delivered = (await arrivals('/deposit_created', 1, forUser(user)))[0].body;
    expect(items[0].id).toBe(delivered.id);
    const failed = await appTester(trigger('charge_failed').performList, { authData: auth(), inputData: {} });
    expect(failed.map((i) => i.type)).toContain('paywall.balance.charge.failed');
    expect(failed.every((i) => i.type === 'paywall.balance.charge.failed')).toBe(true);
  });

  it('performUnsubscribe removes the hook: the relay lists it no more', async () => {
    const { id } = subscriptions.deposit_created;
    const out = await appTester(trigger('deposit_created').performUnsubscribe, { authData: auth(), subscribeData: subscriptions.deposit_created });
    expect(out).toEqual({ id, deleted: true });
    expect((await relayHooks()).map((h) => h.id)).not.toContain(id);
  });

  it('a target answering 410 (a Zap turned off) is unsubscribed by the relay, and Zapier\'s unsubscribe still succeeds', async () => {
    receiver.gone.add('/charge_failed');
    const before = (await arrivals('/charge_failed', 1)).length;
    await appTester(charge, { authData: auth(), inputData: { user, amount: '1', reference: 'e2e_hooks_chg_3', reason: 'other' } });
    await arrivals('/charge_failed', before + 1);
    const { id } = subscriptions.charge_failed;
    const deadline = Date.now() + 15000;
    while ((await relayHooks()).some((h) => h.id === id) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await relayHooks()).map((h) => h.id)).not.toContain(id);
    const out = await appTester(trigger('charge_failed').performUnsubscribe, { authData: auth(), subscribeData: subscriptions.charge_failed });
    expect(out).toEqual({ id, deleted: true });
  });

  it('a token without the events operation is told which operation to ask for', async () => {
    const error = await errorOf(
      appTester(trigger('balance_depleted').performSubscribe, { authData: auth(noEvents), inputData: {}, targetUrl: receiver.url('/x') }),
    );
    expect(error.code).toBe('forbidden');
    expect(error.message).toContain('"events" operation');
  });
});
