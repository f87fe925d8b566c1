'use strict';
// The credential test gives, for each way a credential can be wrong, the message the node
// gives at run time for the same mistake.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist, run, runError, answer, moneyParams } = require('./helpers');

const { testRelayCredential } = dist('nodes/PaywallsRelay/credentialTest.js');
const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');

const ME = { id: 'tok_1', label: 'n8n renewals', operations: ['deposit', 'balance'], sandbox: true };
const INPUTS = { user: 'u1', amount: '1', reference: 'r1' };

async function credentialTest(data, respond) {
	const sent = [];
	const result = await testRelayCredential(data, async (req) => {
		sent.push(req);
		return await respond(req);
	});
	return { ...result, sent };
}

/** The message the node gives at run time with this credential and this answer. */
async function runtimeMessage(credentials, respond) {
	const { items } = await run(moneyParams('deposit', INPUTS), { credentials, continueOnFail: true, respond });
	return items[0].json.error;
}

test('a relay that accepts the token passes, naming the token and sandbox mode', async () => {
	const ok = await credentialTest({ baseUrl: 'http://relay.test/', token: 'pwr_x' }, () => answer(200, ME));
	assert.equal(ok.status, 'OK');
	assert.match(ok.message, /"n8n renewals" may deposit, balance/);
	assert.match(ok.message, /sandbox/);
	assert.equal(ok.sent[0].url, 'http://relay.test/v1/relay/me');
	assert.equal(ok.sent[0].headers.Authorization, 'Bearer pwr_x');
});

const FAILURES = {
	'a Base URL ending in /v1': {
		baseUrl: 'http://relay.test/v1',
		respond: () => answer(404, { type: 'urn:paywalls-relay:problem:not-found', title: 'Not found', status: 404 }),
		want: /without \/v1/,
	},
	'a refused token (401)': {
		baseUrl: 'http://relay.test',
		respond: () =>
			answer(401, { type: 'urn:paywalls-relay:problem:unauthorized', title: 'Unauthorized', status: 401, reason: 'revoked' }),
		want: /refused the relay token.*\(the relay says: revoked\).*Credentials > Paywalls Relay API/,
	},
	'nothing listening': {
		baseUrl: 'http://localhost:8000',
		respond: () => {
			throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8000'), { code: 'ECONNREFUSED' });
		},
		want: /Could not connect to Paywalls Relay at http:\/\/localhost:8000 \(ECONNREFUSED\).*host\.docker\.internal/,
	},
	'a redirect': {
		baseUrl: 'http://relay.test',
		respond: (req) => answer(302, '', { location: `https://login.example.com/sso?next=${encodeURIComponent(req.url)}` }),
		want: /redirects: http:\/\/relay\.test answered HTTP 302 and points to https:\/\/login\.example\.com\/sso\./,
	},
	'a proxy page': {
		baseUrl: 'http://relay.test',
		respond: () => answer(403, '<html>Access denied</html>'),
		want: /answered HTTP 403 \("Access denied"\), which is not an answer of a Paywalls Relay/,
	},
};

for (const [name, { baseUrl, respond, want }] of Object.entries(FAILURES)) {
	test(`credential test and run time say the same for ${name}`, async () => {
		const result = await credentialTest({ baseUrl, token: 'pwr_x' }, respond);
		assert.equal(result.status, 'Error');
		assert.match(result.message, want);
		const runtime = await runtimeMessage({ baseUrl, token: 'pwr_x' }, respond);
		assert.equal(result.message, runtime, 'the same message as the node at run time');
	});
}

test('Paywalls itself, a secret key, a missing or malformed URL: refused before any request', async () => {
	const never = () => assert.fail('nothing may be sent');
	const paywalls = await credentialTest({ baseUrl: 'https://api.paywalls.ai/v1', token: 'pwr_x' }, never);
	// renderProblem capitalises the first letter, even of a URL ("Https://..."): reported to the core owner.
	assert.match(paywalls.message, /^https:\/\/api\.paywalls\.ai is Paywalls itself, not your Paywalls Relay/i);
	const runtime = await runtimeMessage({ baseUrl: 'https://api.paywalls.ai/v1', token: 'pwr_x' }, never);
	assert.equal(paywalls.message, runtime);
	assert.match((await credentialTest({ baseUrl: 'http://relay.test', token: 'sk-live-123' }, never)).message, /Paywalls secret key/);
	assert.match((await credentialTest({ baseUrl: '', token: 'pwr_x' }, never)).message, /no Base URL/);
	assert.match((await credentialTest({ baseUrl: 'relay.test', token: 'pwr_x' }, never)).message, /"relay\.test" is not a web address/);
	assert.match((await credentialTest({ baseUrl: 'http://relay.test', token: ' ' }, never)).message, /no relay token/);
});

test("the node's credential test calls n8n's request helper without following redirects", async () => {
	const calls = [];
	const ctx = {
		helpers: {
			async request(options) {
				calls.push(options);
				return answer(200, ME);
			},
		},
	};
	const fn = new PaywallsRelay().methods.credentialTest.paywallsRelayApiTest;
	const result = await fn.call(ctx, { id: '1', name: 'c', type: 'paywallsRelayApi', data: { baseUrl: 'http://relay.test', token: 'pwr_x' } });
	assert.equal(result.status, 'OK');
	assert.equal(calls[0].uri, 'http://relay.test/v1/relay/me');
	assert.equal(calls[0].followRedirect, false);
	assert.equal(calls[0].simple, false);
	assert.equal(calls[0].resolveWithFullResponse, true);
	// A wrong token is an error message, never an exception.
	const err = await runError(moneyParams('deposit', INPUTS), { respond: () => answer(401, { type: 'urn:paywalls-relay:problem:unauthorized', status: 401 }) });
	assert.match(err.message, /refused the relay token/);
});
