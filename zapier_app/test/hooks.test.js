'use strict';

// The instant triggers (triggers/hooks.js) against a mocked relay: the REST-hook requests they
// make, what they put out for a POSTed event, and their errors.

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const EVENTS = require('../../schemas/events-contract.json');
const { BASE_URL, TOKEN, authData, problem, PROBLEM_HEADERS, errorOf, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => {
  const pending = nock.pendingMocks();
  nock.cleanAll();
  expect(pending).toEqual([]);
});

const TARGET = 'https://hooks.zapier.com/hooks/standard/1/abc/';
const TRIGGERS = {
  deposit_created: 'paywall.balance.deposit.created',
  balance_depleted: 'paywall.balance.depleted',
  charge_failed: 'paywall.balance.charge.failed',
};
const op = (key) => App.triggers[key].operation;

const event = (type, data = {}, id = 'evt_1') => ({
  id,
  type,
  version: '1',
  createdAt: '2026-11-30T16:00:00Z',
  source: 'paywalls',
  data: { externalUserId: 'acme:u1', amount: '5', currency: 'USD', ...data },
});

describe.each(Object.entries(TRIGGERS))('%s', (key, type) => {
  it('subscribes the Zap target to its event type with the token, and returns the hook', async () => {
    let seen;
    nock(BASE_URL)
      .post('/v1/relay/hooks', (body) => {
        seen = body;
        return true;
      })
      .reply(function reply() {
        seen.headers = flatHeaders(this.req.headers);
        return [201, { id: 'hk_7', target_url: TARGET, event_types: [type], filter: null }];
      });
    const hook = await appTester(op(key).performSubscribe, { authData: authData(), inputData: {}, targetUrl: TARGET });
    expect(hook).toMatchObject({ id: 'hk_7' });
    const { headers, ...body } = seen;
    expect(body).toEqual({ target_url: TARGET, event_types: [type] });
    expect(headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it('unsubscribes the hook it subscribed', async () => {
    nock(BASE_URL).delete('/v1/relay/hooks/hk_7').reply(204);
    const out = await appTester(op(key).performUnsubscribe, { authData: authData(), subscribeData: { id: 'hk_7' } });
    expect(out).toEqual({ id: 'hk_7', deleted: true });
  });

  it('puts out the POSTed event with its user on top', async () => {
    const posted = event(type, { user: 'acme:u1' });
    const items = await appTester(op(key).perform, { authData: authData(), inputData: {}, cleanedRequest: posted });
    expect(items).toEqual([{ ...posted, user: 'acme:u1' }]);
  });

  it('lists recent events of its type for samples', async () => {
    nock(BASE_URL)
      .get('/v1/relay/events')
      .query({ type, limit: '10' })
      .reply(200, { data: [event(type, {}, 'evt_2'), event(type, {}, 'evt_1')] });
    const items = await appTester(op(key).performList, { authData: authData(), inputData: {} });
    expect(items.map((i) => i.id)).toEqual(['evt_2', 'evt_1']);
    expect(items[0].user).toBe('acme:u1');
  });

  it('has the contract sample (relay-made), holding every output field but those of Paywalls-made events', () => {
    const spec = Object.values(EVENTS.triggers).find((t) => t.zapier && t.zapier.key === key);
    expect(op(key).sample).toEqual(spec.sample);
    expect(op(key).sample.source).toBe('relay');
    expect(op(key).type).toBe('hook');
    expect(op(key).outputFields.map((f) => f.key)).toEqual(spec.outputs.map((o) => o.path.replace(/\./g, '__')));
    for (const output of spec.outputs.filter((o) => o.when !== 'paywalls')) {
      const value = output.path.split('.').reduce((v, k) => (v == null ? undefined : v[k]), spec.sample);
      expect([output.path, value === undefined]).toEqual([output.path, false]);
    }
  });
});

describe('the User filter', () => {
  const perform = op('deposit_created').perform;
  const type = TRIGGERS.deposit_created;

  it('is sent trimmed as filter.user', async () => {
    let seen;
    nock(BASE_URL)
      .post('/v1/relay/hooks', (body) => {
        seen = body;
        return true;
      })
      .reply(201, { id: 'hk_8' });
    await appTester(op('deposit_created').performSubscribe, {
      authData: authData(),
      inputData: { user: '  acme:u1 ' },
      targetUrl: TARGET,
    });
    expect(seen).toEqual({ target_url: TARGET, event_types: [type], filter: { user: 'acme:u1' } });
  });

  it('drops an event for another user, or of another type, that reaches the target', async () => {
    const bundle = (posted) => ({ authData: authData(), inputData: { user: 'acme:u1' }, cleanedRequest: posted });
    expect(await appTester(perform, bundle(event(type, { externalUserId: 'acme:u2' })))).toEqual([]);
    expect(await appTester(perform, bundle(event('paywall.balance.depleted')))).toEqual([]);
    expect(await appTester(perform, bundle(event(type)))).toHaveLength(1);
  });

  it('filters performList to that user', async () => {
    nock(BASE_URL)
      .get('/v1/relay/events')
      .query({ type, limit: '100' })
      .reply(200, { data: [event(type, { externalUserId: 'acme:u2' }, 'evt_3'), event(type, {}, 'evt_1')] });
    const items = await appTester(op('deposit_created').performList, { authData: authData(), inputData: { user: 'acme:u1' } });
    expect(items.map((i) => i.id)).toEqual(['evt_1']);
  });

  it('refuses a list mapped into User, naming the field, before calling the relay', async () => {
    const error = await errorOf(
      appTester(op('deposit_created').performSubscribe, {
        authData: authData(),
        inputData: { user: ['a', 'b'] },
        targetUrl: TARGET,
      }),
    );
    expect(error.message).toMatch(/^User must be text, not a list/);
  });
});

describe('what the relay POSTs', () => {
  const perform = op('charge_failed').perform;
  const type = TRIGGERS.charge_failed;

  it('unwraps a {delivery, event} body as Paywalls sends it', async () => {
    const inner = event(type, { errorCode: 'insufficient_funds' });
    const items = await appTester(perform, { authData: authData(), inputData: {}, cleanedRequest: { delivery: { id: 'd1' }, event: inner } });
    expect(items).toEqual([{ ...inner, user: 'acme:u1' }]);
  });

  it('a __proto__ key in a hostile body stays data: nothing is polluted', async () => {
    const posted = JSON.parse(
      `{"id":"evt_p","type":"${type}","__proto__":{"polluted":true},"data":{"externalUserId":"acme:u1","__proto__":{"x":1}}}`,
    );
    const [item] = await appTester(perform, { authData: authData(), inputData: {}, cleanedRequest: posted });
    expect(item.id).toBe('evt_p');
    expect(item.user).toBe('acme:u1');
    expect({}.polluted).toBeUndefined();
    expect({}.x).toBeUndefined();
    expect(Object.getPrototypeOf(item)).toBe(Object.prototype);
  });

  it.each([
    ['no body', undefined],
    ['text', 'hello'],
    ['an array', [event(type)]],
    ['an object without id', { type }],
  ])('starts nothing for %s', async (_name, body) => {
    expect(await appTester(perform, { authData: authData(), inputData: {}, cleanedRequest: body })).toEqual([]);
  });
});

describe('errors', () => {
  const subscribe = op('balance_depleted').performSubscribe;
  const bundle = () => ({ authData: authData(), inputData: {}, targetUrl: TARGET });

  it('a token without the events operation: says which operation to ask for', async () => {
    nock(BASE_URL)
      .post('/v1/relay/hooks')
      .reply(403, problem('forbidden', 403, { limit: 'operation' }), PROBLEM_HEADERS);
    const error = await errorOf(appTester(subscribe, bundle()));
    expect(error.code).toBe('forbidden');
    expect(error.message).toContain('not allowed to subscribe to events');
    expect(error.message).toContain('"events" operation');
  });

  it('a hook answer without an id is not taken for a subscription', async () => {
    nock(BASE_URL).post('/v1/relay/hooks').reply(201, { ok: true });
    const error = await errorOf(appTester(subscribe, bundle()));
    expect(error.code).toBe('not-json');
  });

  it('an HTML page answering 200 at the Relay URL fails, not an empty sample list', async () => {
    nock(BASE_URL).get('/v1/relay/events').query(true).reply(200, '<html>login</html>', { 'Content-Type': 'text/html' });
    const error = await errorOf(appTester(op('balance_depleted').performList, { authData: authData(), inputData: {} }));
    expect(error.code).toBe('not-json');
  });

  it('a page whose data is not a list fails too', async () => {
    nock(BASE_URL).get('/v1/relay/events').query(true).reply(200, { data: {} });
    const error = await errorOf(appTester(op('balance_depleted').performList, { authData: authData(), inputData: {} }));
    expect(error.code).toBe('not-json');
  });

  it('unsubscribing a hook the relay already removed (after a 410) succeeds', async () => {
    nock(BASE_URL).delete('/v1/relay/hooks/hk_9').reply(404, problem('not-found', 404), PROBLEM_HEADERS);
    const out = await appTester(op('balance_depleted').performUnsubscribe, { authData: authData(), subscribeData: { id: 'hk_9' } });
    expect(out).toEqual({ id: 'hk_9', deleted: true });
  });

  it('a 404 from something that is not the relay still fails the unsubscribe', async () => {
    nock(BASE_URL).delete('/v1/relay/hooks/hk_9').reply(404, '<html>Not Found</html>', { 'Content-Type': 'text/html' });
    const error = await errorOf(
      appTester(op('balance_depleted').performUnsubscribe, { authData: authData(), subscribeData: { id: 'hk_9' } }),
    );
    expect(error.code).toBe('no-relay-here');
  });

  it('unsubscribing without subscribe data calls nothing', async () => {
    const out = await appTester(op('balance_depleted').performUnsubscribe, { authData: authData(), subscribeData: {} });
    expect(out).toEqual({ id: null, deleted: false });
  });

  it('the hook id is sent encoded in the path', async () => {
    nock(BASE_URL).delete('/v1/relay/hooks/a%2Fb%3Fc').reply(204);
    const out = await appTester(op('balance_depleted').performUnsubscribe, { authData: authData(), subscribeData: { id: 'a/b?c' } });
    expect(out.deleted).toBe(true);
  });

  it('a Paywalls secret key is never sent to subscribe', async () => {
    const error = await errorOf(
      appTester(subscribe, { authData: authData({ token: 'sk-live-123' }), inputData: {}, targetUrl: TARGET }),
    );
    expect(error.code).toBe('secret-key-pasted');
  });
});
