'use strict';
// Any answer outside 200-299 is an error, whatever its body: redirects are never followed (a
// followed 301/302 turns the POST into a GET, a followed 307 re-sends the body and token
// elsewhere, and either may end in a 2xx that is not the relay's answer), and the 3xx that
// comes back fails with a message naming it. A 2xx without the relay's JSON object fails too.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist, fakeContext } = require('./helpers');

const routing = dist('nodes/PaywallsRelay/routing.js');
const { describeLocation, httpsSuggestion } = dist('nodes/PaywallsRelay/problem.js');
const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
const { PaywallsRelayApi } = dist('credentials/PaywallsRelayApi.credentials.js');
const { NodeApiError } = require('n8n-workflow');

const DEPOSIT = { resource: 'balance', operation: 'deposit', user: 'acme:user_123', amount: '10', reference: 'in_1' };
const CHARGE = { resource: 'charge', operation: 'charge', user: 'acme:user_123', amount: '2', reference: 'job_1' };
const BALANCE = { resource: 'balance', operation: 'get', user: 'acme:user_123' };
const LIST = { resource: 'deposit', operation: 'list', returnAll: true };

function response(statusCode, body, headers = {}) {
	return { statusCode, body, headers };
}

/** handleRelayResponse for one answer; returns the error it threw (fails the test if it did not throw). */
async function errorFor(params, res, options = {}) {
	let items;
	try {
		items = await routing.handleRelayResponse.call(fakeContext(params, { itemIndex: 1, ...options }), [], res);
	} catch (e) {
		assert.ok(e instanceof NodeApiError, `a NodeApiError, not ${e && e.constructor && e.constructor.name}`);
		return e;
	}
	assert.fail(`no error: the answer became ${JSON.stringify(items)}`);
}

// --- redirects are never followed ------------------------------------------------------------

test('requests never follow redirects: requestDefaults, every operation and the credential test', () => {
	const description = new PaywallsRelay().description;
	assert.equal(description.requestDefaults.disableFollowRedirect, true);
	// No operation may turn it back on.
	const operations = description.properties.filter((p) => p.name === 'operation').flatMap((p) => p.options);
	assert.equal(operations.length, 4);
	for (const op of operations) {
		assert.notEqual(op.routing.request.disableFollowRedirect, false, op.value);
		assert.equal(op.routing.request.maxRedirects, undefined, op.value);
		assert.equal(op.routing.request.ignoreHttpStatusErrors, true, `${op.value}: the 3xx reaches handleRelayResponse`);
	}
	assert.equal(new PaywallsRelayApi().test.request.disableFollowRedirect, true);
});

test('302 with a Location and no body fails, names the redirect, where it points and the fix', async () => {
	const e = await errorFor(
		DEPOSIT,
		response(302, '', { location: 'https://login.example.com/sso?state=secret123#x' }),
		{ credentials: { baseUrl: 'https://relay.test', token: 'pwr_x' } },
	);
	assert.match(
		e.message,
		/^The Base URL of the Paywalls Relay API credential \(https:\/\/relay\.test\) redirects: HTTP 302 to https:\/\/login\.example\.com\/sso\./,
	);
	assert.doesNotMatch(e.message, /secret123/, 'the query string stays out of the message');
	assert.match(e.message, /does not follow redirects to the relay/);
	assert.match(e.message, /Set the Base URL of the Paywalls Relay API credential to the relay's https:\/\/ address exactly as the relay operator gave it/);
	assert.doesNotMatch(e.message, /Use https:\/\//, 'another host: no guess at the URL');
	assert.match(e.description, /Retrying with the same fields is safe/);
	assert.equal(e.httpCode, '302');
	assert.equal(e.context.itemIndex, 1);
});

test('301 with an HTML body from http:// to https:// suggests the https:// Base URL and hides the HTML', async () => {
	const e = await errorFor(
		DEPOSIT,
		response(301, '<html><body>Moved Permanently</body></html>', {
			'content-type': 'text/html',
			Location: 'https://relay.test/v1/user/balance/deposit',
		}),
		{ credentials: { baseUrl: 'http://relay.test/', token: 'pwr_x' } },
	);
	assert.match(e.message, /redirects: HTTP 301 to https:\/\/relay\.test\/v1\/user\/balance\/deposit\./);
	assert.match(e.message, /Use https:\/\/relay\.test as the Base URL\./);
	assert.doesNotMatch(e.message, /Moved Permanently/);
	assert.equal(e.httpCode, '301');
});

test('307 and 308 fail; a relative Location is resolved against the Base URL', async () => {
	const e307 = await errorFor(CHARGE, response(307, '', { location: 'https://elsewhere.example/v1/user/charge' }));
	assert.match(e307.message, /redirects: HTTP 307 to https:\/\/elsewhere\.example\/v1\/user\/charge\./);
	assert.equal(e307.httpCode, '307');
	const e308 = await errorFor(BALANCE, response(308, '', { location: '/login?next=/v1' }), {
		credentials: { baseUrl: 'http://relay.test', token: 'pwr_x' },
	});
	assert.match(e308.message, /redirects: HTTP 308 to http:\/\/relay\.test\/login\./);
});

test('a 3xx without a Location still fails, also without a credential to name', async () => {
	const e = await errorFor(LIST, response(300, undefined));
	assert.match(e.message, /^The Base URL of the Paywalls Relay API credential redirects: HTTP 300 without a Location\./);
});

test('with Continue On Fail a redirect becomes an error item, never a success item', async () => {
	const ctx = fakeContext(DEPOSIT, { continueOnFail: true });
	const items = await routing.handleRelayResponse.call(ctx, [], response(302, '', { location: 'https://login.example.com/' }));
	assert.equal(items.length, 1);
	assert.match(items[0].json.error, /redirects: HTTP 302 to https:\/\/login\.example\.com\//);
	assert.equal(items[0].json.details.status, 302);
	assert.equal(items[0].json.details.problem, 'redirected');
	assert.ok(Object.keys(items[0].json).every((k) => ['error', 'message', 'details'].includes(k)));
	// addUserAndAmount leaves error items alone.
	const [after] = await routing.addUserAndAmount.call(ctx, items);
	assert.equal(after.json.user, undefined);
});

// --- other answers outside 200-299 ------------------------------------------------------------

test('418 text/plain fails and says it is not a Paywalls Relay answer', async () => {
	const e = await errorFor(DEPOSIT, response(418, "I'm a teapot", { 'content-type': 'text/plain' }));
	assert.match(
		e.message,
		/^The credential's Base URL answered HTTP 418: I'm a teapot, which is not an answer of a Paywalls Relay\. Check the Base URL/,
	);
	assert.equal(e.httpCode, '418');
});

test('a 1xx or a status above 599 is an error too', async () => {
	assert.match((await errorFor(DEPOSIT, response(101, ''))).message, /answered HTTP 101, which is not an answer of a Paywalls Relay/);
	assert.match((await errorFor(DEPOSIT, response(799, ''))).message, /answered HTTP 799/);
});

// --- a 2xx without the relay's JSON object ----------------------------------------------------

test('a deposit answered 200 with a non-object body fails: not known whether it was applied', async () => {
	const cases = [
		['"OK"', 'text'],
		['OK', 'text'],
		['<html>Welcome</html>', 'text'],
		['[]', 'a JSON array'],
		[[], 'a JSON array'],
		['', 'no body'],
		[undefined, 'no body'],
		[null, 'no body'],
		[42, 'a JSON number'],
		[Buffer.from('plain'), 'text'],
	];
	for (const [body, kind] of cases) {
		const e = await errorFor(DEPOSIT, response(200, body, { 'content-type': 'text/html' }));
		assert.equal(
			e.message.split('. ')[0],
			`The relay answered HTTP 200 without the expected body (got ${kind}), so it is not known whether this deposit was applied`,
			JSON.stringify(body),
		);
		assert.match(e.message, /Check that the credential's Base URL points at your Paywalls Relay/);
		assert.equal(e.httpCode, '200');
	}
	const e204 = await errorFor(DEPOSIT, response(204, ''));
	assert.match(e204.message, /HTTP 204 without the expected body/);
});

test('a charge answered with a bare string fails instead of returning success', async () => {
	const e = await errorFor(CHARGE, response(200, 'charged'));
	assert.match(e.message, /without the expected body \(got text\), so it is not known whether this charge was applied/);
});

test('reads answered without a JSON object fail too, without the "applied" wording', async () => {
	const e = await errorFor(BALANCE, response(200, '<html>login</html>'));
	assert.match(e.message, /^The relay answered HTTP 200 without the expected body \(got text\)\. Check/);
	const list = await errorFor(LIST, response(200, '[]'));
	assert.match(list.message, /without the expected body \(got a JSON array\)\./);
});

test('with Continue On Fail a 2xx without the expected body is an error item', async () => {
	const ctx = fakeContext(DEPOSIT, { continueOnFail: true });
	const [item] = await routing.handleRelayResponse.call(ctx, [], response(200, 'OK'));
	assert.match(item.json.error, /without the expected body/);
	assert.equal(item.json.details.problem, 'unexpected-body');
	assert.equal(item.json.details.status, 200);
});

test('a JSON object is still a success', async () => {
	const [item] = await routing.handleRelayResponse.call(fakeContext(DEPOSIT), [], response(200, '{"balanceFormatted":"$1"}'));
	assert.deepEqual(item.json, { balanceFormatted: '$1' });
});

// --- helpers ------------------------------------------------------------------------------------

test('describeLocation keeps origin and path; httpsSuggestion only for http:// to https:// on the same host', () => {
	assert.equal(describeLocation('https://a.example/p?token=x#f'), 'https://a.example/p');
	assert.equal(describeLocation('/login?x=1', 'http://relay.test/base'), 'http://relay.test/login');
	assert.equal(describeLocation(undefined), undefined);
	assert.equal(httpsSuggestion('http://relay.test/v1', 'https://relay.test/v1/relay/me'), 'https://relay.test');
	assert.equal(httpsSuggestion('http://relay.test:8000/r/', 'https://relay.test/r/v1/me'), 'https://relay.test/r');
	assert.equal(httpsSuggestion('https://relay.test', 'https://relay.test/login'), undefined);
	assert.equal(httpsSuggestion('http://relay.test', 'https://other.test/'), undefined);
	assert.equal(httpsSuggestion(undefined, 'https://relay.test/'), undefined);
});

// --- the relay's own answers about redirects and unknown outcomes --------------------------------

test('upstream-misdirected (the relay met a redirect at Paywalls) says nothing was applied and who fixes it', async () => {
	const e = await errorFor(DEPOSIT, response(502, {
		type: 'urn:paywalls-relay:problem:upstream-misdirected',
		title: 'The relay is not configured to reach Paywalls',
		status: 502,
		detail: 'The Paywalls API answered 302 (a redirect), which it never does.',
	}));
	assert.match(e.message, /^The relay cannot reach Paywalls: its PAYWALLS_BASE_URL answered with a redirect\. Nothing was applied\./);
	assert.match(e.message, /relay operator/);
	assert.equal(e.httpCode, '502');
});

test('outcome-unrecorded never claims nothing was applied; token-changed says nothing was sent', async () => {
	const unrecorded = await errorFor(DEPOSIT, response(503, {
		type: 'urn:paywalls-relay:problem:outcome-unrecorded',
		title: "The relay could not record Paywalls' answer",
		status: 503,
		detail: 'Paywalls was called.',
	}, { 'retry-after': '5' }));
	assert.match(unrecorded.message, /outcome is unknown\. Retry after 5 s\. Retrying with the same fields is safe/);
	assert.doesNotMatch(unrecorded.message, /nothing (was|changed)/i);
	const changed = await errorFor(DEPOSIT, response(409, {
		type: 'urn:paywalls-relay:problem:token-changed',
		title: 'The token changed during this call',
		status: 409,
		detail: 'd',
	}));
	assert.match(changed.message, /settings changed during this call, and nothing was sent to Paywalls/);
});
