'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { BASE_URL, authData } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.triggers.new_deposit.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const entry = (id, metadata, user = 'acme:user_123') => ({
  id,
  created_at: '2026-11-03T09:15:27Z',
  user,
  amount: '20',
  metadata,
  idempotency_key: `pwk1_${id}`,
  token_id: 'tok_1',
  token_label: 'Zapier',
  balance_formatted: '$25.00',
});

describe('New Deposit', () => {
  it('lists deposits newest first with stable ids and lifts reason and reference', async () => {
    nock(BASE_URL)
      .get('/v1/relay/deposits')
      .query({ limit: '50' })
      .reply(200, {
        data: [entry('led_2', { reason: 'refund', reference: 'in_2', plan: 'pro' }), entry('led_1', {})],
        next_cursor: 'c1',
      });
    const items = await appTester(perform, { authData: authData(), inputData: {} });
    expect(items.map((i) => i.id)).toEqual(['led_2', 'led_1']);
    expect(items[0]).toMatchObject({
      reason: 'refund',
      reference: 'in_2',
      metadata: { reason: 'refund', reference: 'in_2', plan: 'pro' },
      balance_formatted: '$25.00',
      idempotency_key: 'pwk1_led_2',
    });
    expect(items[1]).toMatchObject({ reason: null, reference: null });
  });

  it('filters by user on the relay and by reason here', async () => {
    nock(BASE_URL)
      .get('/v1/relay/deposits')
      .query({ limit: '50', user: 'u9' })
      .reply(200, {
        data: [entry('led_5', { reason: 'refund' }, 'u9'), entry('led_4', { reason: 'goodwill' }, 'u9')],
        next_cursor: null,
      });
    const items = await appTester(perform, { authData: authData(), inputData: { user: 'u9', reason: 'goodwill' } });
    expect(items.map((i) => i.id)).toEqual(['led_4']);
  });

  it('returns an empty list when there are none', async () => {
    nock(BASE_URL).get('/v1/relay/deposits').query(true).reply(200, { data: [], next_cursor: null });
    expect(await appTester(perform, { authData: authData(), inputData: {} })).toEqual([]);
  });
});
