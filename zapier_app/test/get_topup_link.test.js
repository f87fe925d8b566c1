'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { BASE_URL, authData, problem, PROBLEM_HEADERS, errorOf } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.creates.get_topup_link.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => {
  const pending = nock.pendingMocks();
  nock.cleanAll();
  expect(pending).toEqual([]);
});

describe('Get Top-up Link', () => {
  it('asks the relay for the trimmed user and gives the link', async () => {
    nock(BASE_URL)
      .get('/v1/user/balance/topup')
      .query({ user: 'acme:u1' })
      .reply(200, { url: 'https://pay.example/t/1', user: 'acme:u1' }, { 'X-Relay-Sandbox': 'true' });
    const out = await appTester(perform, { authData: authData(), inputData: { user: ' acme:u1 ' } });
    expect(out).toEqual({ user: 'acme:u1', topup_url: 'https://pay.example/t/1', sandbox: true });
  });

  it('an answer without a url gives a null link, not a made-up one', async () => {
    nock(BASE_URL).get('/v1/user/balance/topup').query(true).reply(200, { link: 'x' });
    const out = await appTester(perform, { authData: authData(), inputData: { user: 'acme:u1' } });
    expect(out.topup_url).toBeNull();
  });

  it('a token without the topup operation is told to ask for it', async () => {
    nock(BASE_URL)
      .get('/v1/user/balance/topup')
      .query(true)
      .reply(403, problem('forbidden', 403, { limit: 'operation' }), PROBLEM_HEADERS);
    const error = await errorOf(appTester(perform, { authData: authData(), inputData: { user: 'acme:u1' } }));
    expect(error.message).toContain('not allowed to get top-up links');
    expect(error.message).toContain('"topup" operation');
  });

  it('a list mapped into User is refused before any call', async () => {
    const error = await errorOf(appTester(perform, { authData: authData(), inputData: { user: ['a', 'b'] } }));
    expect(error.message).toMatch(/User must be text/);
  });
});
