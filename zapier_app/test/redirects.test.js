'use strict';

// Any answer outside 200-299 fails the step, whatever its body: redirects are never
// followed (a followed 301/302 turns the POST into a GET, a followed 307 re-sends the body
// and token elsewhere, and either may end in a 2xx that is not the relay's answer). A 2xx
// without the relay's JSON object fails too. Each case goes through the whole middleware
// pipeline (createAppTester) with nock.

const nock = require('nock');
const zapier = require('zapier-platform-core');

const App = require('../index');
const { renderProblem, describeLocation, httpsSuggestion } = require('../lib/errors');
const { PROBLEMS } = require('../lib/generated/relay-contract');

const words = (name) => PROBLEMS.tools[name].zapier;
const { BASE_URL, authData, errorOf } = require('./helpers');

const appTester = zapier.createAppTester(App);
const deposit = App.creates.deposit_credits.operation.perform;
const charge = App.creates.charge_user.operation.perform;
const balance = App.searches.find_user_balance.operation.perform;
const deposits = App.triggers.new_deposit.operation.perform;
const connectionTest = App.authentication.test;

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.enableNetConnect());
afterEach(() => nock.cleanAll());

const depositInput = { user: 'acme:user_123', amount: '20', reference: 'in_1' };
const DEPOSIT = '/v1/user/balance/deposit';

const run = (perform, overrides = {}, inputData = depositInput) =>
  appTester(perform, { authData: authData(overrides), inputData });

// What the redirect target would answer if it were followed: a success.
const targetWouldSucceed = (origin, path, method = 'post') =>
  nock(origin)[method](path).query(true).reply(200, { balanceFormatted: '$999.00', success: true, data: [] });

describe('3xx: never followed, never a success', () => {
  it('302 with a Location and no body names the redirect and the fix; the target is not asked', async () => {
    nock(BASE_URL).post(DEPOSIT).reply(302, '', { Location: 'https://login.example.com/sso?state=secret123#x' });
    const target = targetWouldSucceed('https://login.example.com', '/sso', 'get');

    const error = await errorOf(run(deposit));

    expect(error.name).toBe('AppError');
    expect(error.code).toBe('http-redirect');
    expect(error.status).toBe(302);
    expect(error.message).toMatch(/^The Relay URL of this connection redirects: https:\/\/relay\.test answered HTTP 302/);
    expect(error.message).toContain('points to https://login.example.com/sso.');
    expect(error.message).not.toContain('secret123'); // the query string stays out of Zap history
    expect(error.message).toContain('Zapier does not follow redirects to the relay');
    expect(error.message).toContain(words('url_fix'));
    expect(error.message).toContain(words('safe_to_retry'));
    expect(target.isDone()).toBe(false);
  });

  it('301 with an HTML body from http:// to https:// suggests the https:// Relay URL', async () => {
    nock('http://relay.test')
      .post(DEPOSIT)
      .reply(301, '<html><body>Moved Permanently</body></html>', {
        'Content-Type': 'text/html',
        Location: `https://relay.test${DEPOSIT}`,
      });
    const target = targetWouldSucceed('https://relay.test', DEPOSIT, 'get');

    const error = await errorOf(run(deposit, { baseUrl: 'http://relay.test' }));

    expect(error.code).toBe('http-redirect');
    expect(error.status).toBe(301);
    expect(error.message).toContain('http://relay.test answered HTTP 301');
    expect(error.message).toContain(`points to https://relay.test${DEPOSIT}`);
    expect(error.message).toContain('Use https://relay.test as the Relay URL.');
    expect(error.message).not.toContain('Moved Permanently');
    expect(target.isDone()).toBe(false);
  });

  it('307 (which a client would re-POST with the body and token) fails; the other host never sees the call', async () => {
    nock(BASE_URL).post(DEPOSIT).reply(307, '', { Location: `https://elsewhere.example${DEPOSIT}` });
    const target = targetWouldSucceed('https://elsewhere.example', DEPOSIT);

    const error = await errorOf(run(deposit));

    expect(error.code).toBe('http-redirect');
    expect(error.status).toBe(307);
    expect(error.message).toContain(`points to https://elsewhere.example${DEPOSIT}`);
    expect(error.message).not.toContain('Use https://'); // another host: no guess at the URL
    expect(target.isDone()).toBe(false);
  });

  it('a 3xx without a Location still fails and says so', async () => {
    nock(BASE_URL).post('/v1/user/charge').reply(300, '');
    const error = await errorOf(run(charge));
    expect(error.code).toBe('http-redirect');
    expect(error.message).toContain('answered HTTP 300. Zapier does not follow redirects');
    expect(error.message).not.toContain('points to');
  });

  it('a relative Location is resolved against the Relay URL, and a path in the Relay URL is kept', async () => {
    nock('http://relay.test').post(`/relay${DEPOSIT}`).reply(308, '', { Location: '/login' });
    const error = await errorOf(run(deposit, { baseUrl: 'http://relay.test/relay' }));
    // node-fetch resolves the Location against the request URL
    expect(error.message).toContain('points to http://relay.test/login');
    expect(error.message).not.toContain('Use https://');

    nock('http://relay.test').post(`/relay${DEPOSIT}`).reply(301, '', { Location: `https://relay.test/relay${DEPOSIT}` });
    const https = await errorOf(run(deposit, { baseUrl: 'http://relay.test/relay' }));
    expect(https.message).toContain('Use https://relay.test/relay as the Relay URL.');
  });

  it.each([
    ['Find User Balance', balance, () => nock(BASE_URL).get('/v1/user/balance').query(true)],
    ['New Deposit', deposits, () => nock(BASE_URL).get('/v1/relay/deposits').query(true)],
    ['Charge User', charge, () => nock(BASE_URL).post('/v1/user/charge')],
  ])('%s fails on a 302 too', async (_name, perform, interceptor) => {
    interceptor().reply(302, '', { Location: 'https://login.example.com/' });
    const target = targetWouldSucceed('https://login.example.com', '/', 'get');
    const error = await errorOf(run(perform));
    expect(error.code).toBe('http-redirect');
    expect(error.message).toContain('points to https://login.example.com/');
    expect(target.isDone()).toBe(false);
  });

  it('the connection test fails on a redirect with the same message', async () => {
    nock(BASE_URL).get('/v1/relay/me').reply(302, '', { Location: 'https://login.example.com/' });
    const error = await errorOf(run(connectionTest));
    expect(error.code).toBe('http-redirect');
    expect(error.message).toMatch(/^The Relay URL of this connection redirects/);
  });
});

describe('other non-2xx answers without a problem body', () => {
  it('418 text/plain fails, names the status and what was said, and points at the Relay URL', async () => {
    nock(BASE_URL).post(DEPOSIT).reply(418, "I'm a teapot", { 'Content-Type': 'text/plain' });
    const error = await errorOf(run(deposit));
    expect(error.name).toBe('AppError');
    expect(error.code).toBe('not-a-relay');
    expect(error.status).toBe(418);
    expect(error.message).toBe(
      renderProblem('not-a-relay', { url: `${BASE_URL}${DEPOSIT}`, status: 418, origin: BASE_URL, said: "I'm a teapot" }),
    );
    expect(error.message).toContain('https://relay.test answered HTTP 418 ("I\'m a teapot"), which is not an answer of a Paywalls Relay');
    expect(error.message).toContain('Check the Relay URL of this connection');
  });

  it('a 4xx with an HTML body does not copy the HTML into the message', async () => {
    nock(BASE_URL).post(DEPOSIT).reply(400, '<html><h1>Bad Request</h1></html>', { 'Content-Type': 'text/html' });
    const error = await errorOf(run(deposit));
    expect(error.code).toBe('not-a-relay');
    expect(error.message).toBe(renderProblem('not-a-relay', { url: `${BASE_URL}${DEPOSIT}`, status: 400, origin: BASE_URL }));
    expect(error.message).not.toContain('<');
  });

  it('a status above 599 is an error, not a success', async () => {
    nock(BASE_URL).post(DEPOSIT).reply(799, '');
    const error = await errorOf(run(deposit));
    expect(error.status).toBe(799);
    expect(error.message).toContain('answered HTTP 799');
  });
});

describe('2xx without the expected body', () => {
  it.each([
    ['a JSON string', 200, '"OK"', 'application/json'],
    ['a JSON array', 200, '[]', 'application/json'],
    ['JSON null', 200, 'null', 'application/json'],
    ['an HTML page', 200, '<html>Welcome</html>', 'text/html'],
    ['plain text', 201, 'created', 'text/plain'],
    ['no body (204)', 204, '', undefined],
  ])('deposit answered with %s fails', async (_what, status, body, type) => {
    nock(BASE_URL).post(DEPOSIT).reply(status, body, type ? { 'Content-Type': type } : {});
    const error = await errorOf(run(deposit));
    expect(error.name).toBe('AppError');
    expect(error.code).toBe('not-json');
    expect(error.status).toBe(status);
    expect(error.message).toMatch(
      new RegExp(`^Paywalls Relay answered HTTP ${status} without the expected body \\(got [^)]+\\), so it is not known whether this deposit was applied\\.`),
    );
    expect(error.message).toContain(words('safe_to_retry'));
  });

  it('charge answered with a bare string fails (not success: false)', async () => {
    nock(BASE_URL).post('/v1/user/charge').reply(200, '"charged"', { 'Content-Type': 'application/json' });
    const error = await errorOf(run(charge));
    expect(error.code).toBe('not-json');
    expect(error.message).toMatch(/without the expected body \(got text\), so it is not known whether this charge was applied/);
  });

  it('a balance lookup answered with HTML fails', async () => {
    nock(BASE_URL).get('/v1/user/balance').query(true).reply(200, '<html>login</html>', { 'Content-Type': 'text/html' });
    const error = await errorOf(run(balance));
    expect(error.code).toBe('not-json');
    expect(error.message).toMatch(/^Paywalls Relay answered HTTP 200 without the expected body \(got text\)\. Check/);
  });

  it('the trigger fails on a JSON object without a data list instead of returning no deposits', async () => {
    nock(BASE_URL).get('/v1/relay/deposits').query(true).reply(200, { ok: true });
    const error = await errorOf(run(deposits, {}, {}));
    expect(error.code).toBe('not-json');
  });
});

describe('message helpers', () => {
  it('describeLocation keeps origin and path only', () => {
    expect(describeLocation('https://a.example/p/q?token=x#f', 'https://relay.test/v1/x')).toBe('https://a.example/p/q');
    expect(describeLocation('/login?next=1', 'http://relay.test/v1/x')).toBe('http://relay.test/login');
    expect(describeLocation(null, 'https://relay.test')).toBeNull();
  });

  it('httpsSuggestion only for http:// to https:// on the same host', () => {
    expect(httpsSuggestion('http://relay.test/v1/user/charge', 'https://relay.test/v1/user/charge')).toBe('https://relay.test');
    expect(httpsSuggestion('http://relay.test:8080/r/v1/me', 'https://relay.test/r/v1/me')).toBe('https://relay.test/r');
    expect(httpsSuggestion('https://relay.test/v1/me', 'https://relay.test/login')).toBeNull();
    expect(httpsSuggestion('http://relay.test/v1/me', 'https://other.test/v1/me')).toBeNull();
  });
});
