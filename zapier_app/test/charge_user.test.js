'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { deriveKey } = require('../lib/idempotency');
const { BASE_URL, authData, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);
const perform = App.creates.charge_user.operation.perform;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

describe('Charge User', () => {
  it('posts to /v1/user/charge with a charge key (never the deposit key)', async () => {
    const seen = {};
    nock(BASE_URL)
      .post('/v1/user/charge')
      .reply(function reply(_uri, body) {
        seen.headers = flatHeaders(this.req.headers);
        seen.body = body;
        return [200, { success: true, message: 'Charged.' }, { 'Idempotent-Replayed': 'false' }];
      });
    const result = await appTester(perform, {
      authData: authData(),
      inputData: { user: 'acme:user_123', amount: '2.50', reason: 'usage', reference: 'render-42' },
    });
    const body = { user: 'acme:user_123', amount: '2.50', metadata: { reason: 'usage', reference: 'render-42' } };
    expect(seen.body).toEqual(body);
    expect(seen.headers['idempotency-key']).toBe(deriveKey('charge', body));
    expect(seen.headers['idempotency-key']).not.toBe(deriveKey('deposit', body));
    expect(result).toMatchObject({
      user: 'acme:user_123',
      amount: '2.5',
      success: true,
      message: 'Charged.',
      replayed: false,
      idempotency_key: deriveKey('charge', body),
    });
  });
});
