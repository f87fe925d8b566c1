'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { BASE_URL, authData } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.searches.find_user_balance.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

describe('Find User Balance', () => {
  it('asks GET /v1/user/balance?user= and returns one result', async () => {
    const scope = nock(BASE_URL)
      .get('/v1/user/balance')
      .query({ user: 'acme:user_123' })
      .reply(200, { balance: '25000000', balanceFormatted: '$25.00' }, { 'X-Relay-Sandbox': 'true' });
    const results = await appTester(perform, { authData: authData(), inputData: { user: ' acme:user_123 ' } });
    expect(scope.isDone()).toBe(true);
    expect(results).toEqual([
      { id: 'acme:user_123', user: 'acme:user_123', balance: '25000000', balance_formatted: '$25.00', sandbox: true },
    ]);
  });
});
