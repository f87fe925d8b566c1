'use strict';

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { normalizeBaseUrl } = require('../lib/relay');
const { renderProblem } = require('../lib/errors');
const { BASE_URL, TOKEN, authData, problem, PROBLEM_HEADERS, errorOf, flatHeaders } = require('./helpers');

const appTester = zapier.createAppTester(App);

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const ME = {
  id: 'tok_7H2k',
  label: 'Zapier: Stripe renewals',
  operations: ['deposit', 'balance'],
  limits: {},
  usage: { today: '0', this_month: '0' },
  remaining: { today: null, this_month: null },
  expires_at: null,
  sandbox: false,
};

describe('connection test', () => {
  it('calls GET /v1/relay/me with the Bearer token and returns the token info', async () => {
    let headers;
    nock(BASE_URL)
      .get('/v1/relay/me')
      .reply(function reply() {
        headers = flatHeaders(this.req.headers);
        return [200, ME, { 'Content-Type': 'application/json' }];
      });
    const me = await appTester(App.authentication.test, { authData: authData() });
    expect(me).toEqual(ME);
    expect(headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(headers.accept).toContain('application/json');
    expect(headers['user-agent']).toMatch(/^Zapier paywalls-relay-zapier\/\d/);
  });

  it('works with a Relay URL typed with a trailing /v1/ and spaces', async () => {
    nock(BASE_URL).get('/v1/relay/me').reply(200, ME);
    const me = await appTester(App.authentication.test, { authData: authData({ baseUrl: `  ${BASE_URL}/v1/ ` }) });
    expect(me.id).toBe(ME.id);
  });

  it('says reconnect when the token is refused', async () => {
    nock(BASE_URL).get('/v1/relay/me').reply(401, problem('unauthorized', 401, { reason: 'expired' }), PROBLEM_HEADERS);
    const error = await errorOf(appTester(App.authentication.test, { authData: authData() }));
    expect(error.message).toBe(renderProblem(problem('unauthorized', 401, { reason: 'expired' })));
    expect(error.message).toContain('(the relay says: expired)');
    expect(error.message).toContain('My Apps > Paywalls Relay > Reconnect');
  });

  it('refuses a server that answers 200 but is not a relay', async () => {
    nock(BASE_URL).get('/v1/relay/me').reply(200, '<html>Welcome</html>', { 'Content-Type': 'text/html' });
    const error = await errorOf(appTester(App.authentication.test, { authData: authData() }));
    expect(error.message).toContain(`No Paywalls Relay answered at ${BASE_URL}`);
  });

  it('names Paywalls itself when the Relay URL points at it', async () => {
    nock('https://api.paywalls.ai').get('/v1/relay/me').reply(401, { error: 'Unauthorized' });
    const error = await errorOf(
      appTester(App.authentication.test, { authData: authData({ baseUrl: 'https://api.paywalls.ai/v1' }) }),
    );
    expect(error.message).toMatch(/^https:\/\/api\.paywalls\.ai is Paywalls itself, not your Paywalls Relay/);
  });

  it('says the relay cannot be reached when nothing listens', async () => {
    nock(BASE_URL).get('/v1/relay/me').replyWithError({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' });
    const error = await errorOf(appTester(App.authentication.test, { authData: authData() }));
    expect(error.code).toBe('network');
    expect(error.message).toMatch(/^Could not connect to Paywalls Relay at https:\/\/relay\.test \(ECONNREFUSED\)/);
  });

  it('refuses a Paywalls secret key without sending it anywhere', async () => {
    const error = await errorOf(appTester(App.authentication.test, { authData: authData({ token: ' sk-paywalls-live ' }) }));
    expect(error.message).toBe(renderProblem('secret-key-pasted'));
    expect(error.message).toMatch(/Never put the Paywalls secret key into Zapier/);
  });

  it('refuses an empty token', async () => {
    const error = await errorOf(appTester(App.authentication.test, { authData: authData({ token: '' }) }));
    expect(error.message).toBe(renderProblem('missing-token'));
  });

  it('refuses a Relay URL that is not a web address', async () => {
    const error = await errorOf(appTester(App.authentication.test, { authData: authData({ baseUrl: 'ftp://relay' }) }));
    expect(error.message).toBe(renderProblem('bad-url', { value: 'ftp://relay' }));
    expect(error.message).toContain('The Relay URL "ftp://relay" is not a web address.');
  });
});

describe('connection label', () => {
  it('is the token label', async () => {
    const label = await appTester(App.authentication.connectionLabel, { authData: authData(), inputData: ME });
    expect(label).toBe('Zapier: Stripe renewals');
  });

  it('marks a sandbox relay', async () => {
    const label = await appTester(App.authentication.connectionLabel, {
      authData: authData(),
      inputData: { ...ME, sandbox: true },
    });
    expect(label).toBe('Zapier: Stripe renewals (sandbox)');
  });
});

describe('normalizeBaseUrl', () => {
  it.each([
    ['https://relay.example.com', 'https://relay.example.com'],
    ['https://relay.example.com/', 'https://relay.example.com'],
    ['https://relay.example.com/v1', 'https://relay.example.com'],
    ['https://relay.example.com/v1/', 'https://relay.example.com'],
    ['https://example.com/relay/', 'https://example.com/relay'],
    ['relay.example.com', 'https://relay.example.com'],
    ['http://127.0.0.1:8080', 'http://127.0.0.1:8080'],
    [' HTTPS://Relay.Example.com ', 'https://relay.example.com'],
  ])('%j -> %s', (input, expected) => {
    expect(normalizeBaseUrl(input)).toEqual({ url: expected });
  });

  it.each([[''], [undefined], ['ftp://relay'], ['https://relay.example.com?x=1'], ['http://']])('refuses %j', (input) => {
    expect(normalizeBaseUrl(input).problem).toMatch(/^(missing-url|bad-url)$/);
  });
});
