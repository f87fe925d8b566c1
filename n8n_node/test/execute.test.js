'use strict';
// What the node sends for an item and what it puts out: the request the shared contract builds,
// snake_case outputs, dry run, client refusals, and error items that keep user and amount.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist, schema, run, runError, answer, moneyParams } = require('./helpers');

const contract = dist('nodes/PaywallsRelay/generated/relay-contract.js');
const { NodeApiError, NodeOperationError } = require('n8n-workflow');

const INPUTS = { user: 'acme:user_123', amount: '10.00', reason: 'signup_bonus', reference: 'in_1', extra_metadata: { plan: 'pro' } };
const BODY = { user: 'acme:user_123', amount: '10.00', metadata: { plan: 'pro', reason: 'signup_bonus', reference: 'in_1' } };
const KEY = contract.deriveKey('deposit', BODY);
const HEADERS = { 'idempotency-key': KEY, 'idempotent-replayed': 'false', 'x-relay-sandbox': 'true' };

test('Deposit Credits: POST with the contract body and key, redirects off, snake_case output', async () => {
	const { items, requests } = await run(moneyParams('deposit', INPUTS), {
		respond: () => answer(200, { balanceFormatted: '10.00' }, HEADERS),
	});
	assert.equal(requests.length, 1);
	const [req] = requests;
	assert.equal(req.method, 'POST');
	assert.equal(req.url, 'http://relay.test/v1/user/balance/deposit');
	assert.deepEqual(req.body, BODY);
	assert.deepEqual(req.qs, {});
	assert.equal(req.headers['Idempotency-Key'], KEY);
	assert.equal(req.disableFollowRedirect, true);
	assert.equal(req.ignoreHttpStatusErrors, true);
	assert.deepEqual(items, [
		{
			json: {
				user: 'acme:user_123',
				amount: '10',
				reason: 'signup_bonus',
				reference: 'in_1',
				metadata: BODY.metadata,
				idempotency_key: KEY,
				replayed: false,
				sandbox: true,
				dry_run: false,
				new_balance: '10.00',
			},
			pairedItem: { item: 0 },
		},
	]);
	const keys = schema('client-contract.json').operations.deposit.outputs.filter((o) => !o.dry_run_only).map((o) => o.key).sort();
	assert.deepEqual(Object.keys(items[0].json).sort(), keys, 'exactly the contract outputs');
});

test('Dry Run: ?dry_run=true, the same body and key; output says what would happen, no new_balance', async () => {
	const { items, requests } = await run(moneyParams('deposit', { ...INPUTS, dry_run: true }), {
		respond: () =>
			answer(200, { dry_run: true, would: 'credit', idempotency_key: KEY, remaining: { daily_cap: '90' }, request: BODY }),
	});
	assert.deepEqual(requests[0].qs, { dry_run: 'true' });
	assert.deepEqual(requests[0].body, BODY);
	assert.equal(requests[0].headers['Idempotency-Key'], KEY);
	const out = items[0].json;
	assert.equal(out.dry_run, true);
	assert.equal(out.would, 'credit');
	assert.deepEqual(out.remaining, { daily_cap: '90' });
	assert.equal(out.idempotency_key, KEY);
	assert.equal('new_balance' in out, false);
});

test('Charge User: success false is data, not an error; Get Balance names the user', async () => {
	const charge = await run(moneyParams('charge', { user: 'u1', amount: '2', reference: 'job_1' }), {
		respond: () => answer(200, { success: false, message: 'Top up at https://pay.example/x' }),
	});
	assert.equal(charge.requests[0].url, 'http://relay.test/v1/user/charge');
	assert.equal(charge.items[0].json.success, false);
	assert.match(charge.items[0].json.message, /Top up/);
	const balance = await run({ resource: 'balance', operation: 'get', user: ' u1 ' }, {
		respond: () => answer(200, { balance: '1000', balanceFormatted: '$10.00' }, { 'x-relay-sandbox': 'true' }),
	});
	assert.equal(balance.requests[0].method, 'GET');
	assert.deepEqual(balance.requests[0].qs, { user: 'u1' });
	assert.deepEqual(balance.items[0].json, { user: 'u1', balance: '1000', balance_formatted: '$10.00', sandbox: true });
});

test('Get Top-up Link: GET /v1/user/balance/topup for the trimmed user, the link as topup_url', async () => {
	const topup = await run({ resource: 'balance', operation: 'getTopupLink', user: ' acme:u1 ' }, {
		respond: () => answer(200, { url: 'https://pay.example/t/1', user: 'acme:u1' }),
	});
	assert.equal(topup.requests[0].method, 'GET');
	assert.equal(topup.requests[0].url, 'http://relay.test/v1/user/balance/topup');
	assert.deepEqual(topup.requests[0].qs, { user: 'acme:u1' });
	assert.equal(topup.requests[0].body, undefined);
	assert.deepEqual(topup.items[0].json, { user: 'acme:u1', topup_url: 'https://pay.example/t/1', sandbox: false });
	const refused = await runError({ resource: 'balance', operation: 'getTopupLink', user: 'acme:u1' }, {
		respond: () =>
			answer(403, { type: 'urn:paywalls-relay:problem:forbidden', title: 't', status: 403, limit: 'operation' }, {
				'content-type': 'application/problem+json',
			}),
	});
	assert.match(refused.message, /not allowed to get top-up links/);
	assert.match(refused.message, /"topup" operation/);
});

test('client refusals use the contract texts and send nothing', async () => {
	const texts = schema('client-contract.json').client_errors;
	const cases = [
		[{ ...INPUTS, reference: '  ' }, texts['reference-required']],
		[{ ...INPUTS, extra_metadata: { reference: 'x' } }, /row named reference/],
		[{ ...INPUTS, dedupe_on: 'custom', custom_dedupe_fields: ' ' }, texts['custom-dedupe-fields-empty']],
	];
	for (const [inputs, want] of cases) {
		const error = await runError(moneyParams('deposit', inputs), { respond: () => assert.fail('nothing may be sent') });
		assert.ok(error instanceof NodeOperationError, String(error));
		if (typeof want === 'string') assert.equal(error.message, want);
		else assert.match(error.message, want);
		assert.equal(error.requests.length, 0);
	}
});

test('an amount the derivation refuses goes without a key, and the relay names it', async () => {
	const { requests } = await run(moneyParams('deposit', { ...INPUTS, amount: '1.5e2' }), {
		continueOnFail: true,
		respond: () =>
			answer(422, {
				type: 'urn:paywalls-relay:problem:validation',
				title: 'Invalid',
				status: 422,
				errors: [{ field: 'amount', message: 'must be a positive decimal' }],
			}),
	});
	assert.equal(requests[0].body.amount, '1.5e2');
	assert.equal(requests[0].headers['Idempotency-Key'], undefined);
});

test('Continue On Fail: the error item keeps user and amount, and the problem to branch on', async () => {
	const { items } = await run(moneyParams('deposit', { ...INPUTS, user: 'acme:bob', amount: '99' }), {
		continueOnFail: true,
		respond: () =>
			answer(403, {
				type: 'urn:paywalls-relay:problem:forbidden',
				title: 'Forbidden',
				status: 403,
				detail: 'over the maximum',
				limit: 'max_amount',
				remaining: '5',
			}),
	});
	const [item] = items;
	assert.equal(item.json.user, 'acme:bob');
	assert.equal(item.json.amount, '99');
	assert.match(item.json.error, /per-call maximum of 5/);
	assert.equal(item.json.details.problem, 'forbidden');
	assert.equal(item.json.details.limit, 'max_amount');
	assert.equal(item.json.details.status, 403);
	// Not item.error: n8n replaces the json of such an item with {error}, dropping user and amount.
	assert.equal(item.error, undefined);
	assert.deepEqual(item.pairedItem, { item: 0 });
	assert.equal(item.json.details.user, 'acme:bob');
	// "Continue (using error output)" routes only items with error/message/details keys there.
	const routed = await run(moneyParams('deposit', { ...INPUTS, user: 'acme:bob', amount: '99' }), {
		continueOnFail: true,
		onError: 'continueErrorOutput',
		respond: () => answer(403, { type: 'urn:paywalls-relay:problem:forbidden', status: 403, limit: 'max_amount', remaining: '5' }),
	});
	assert.deepEqual(Object.keys(routed.items[0].json).sort(), ['details', 'error']);
	assert.equal(routed.items[0].json.details.user, 'acme:bob');
	assert.equal(routed.items[0].json.details.amount, '99');
	// The same for a refusal made before any call, and for a relay that cannot be reached.
	const refused = await run(moneyParams('deposit', { ...INPUTS, reference: '' }), { continueOnFail: true });
	assert.equal(refused.items[0].json.user, 'acme:user_123');
	assert.equal(refused.items[0].json.amount, '10.00');
	const down = await run(moneyParams('deposit', INPUTS), {
		continueOnFail: true,
		respond: () => {
			throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8000'), { code: 'ECONNREFUSED' });
		},
	});
	assert.equal(down.items[0].json.user, 'acme:user_123');
	assert.match(down.items[0].json.error, /Could not connect to Paywalls Relay at http:\/\/relay\.test \(ECONNREFUSED\)/);
});

test('a 502 after Paywalls answered 503 says Paywalls did not confirm it, not that it timed out', async () => {
	const error = await runError(moneyParams('deposit', INPUTS), {
		respond: () =>
			answer(502, {
				type: 'urn:paywalls-relay:problem:upstream-ambiguous',
				title: 'Paywalls did not confirm the call',
				status: 502,
				detail: 'Paywalls answered 503: busy. The deposit or charge may or may not have been applied.',
				upstream_status: 503,
			}),
	});
	assert.doesNotMatch(error.message, /in time/);
	assert.match(error.message, /did not confirm this deposit/);
	assert.match(error.message, /Paywalls answered 503/);
	assert.match(error.message, /Retrying with the same fields is safe/);
});

test('a redirect is not followed: the error names where it points and the https:// Base URL', async () => {
	const error = await runError(moneyParams('deposit', INPUTS), {
		credentials: { baseUrl: 'http://relay.test/', token: 'pwr_x' },
		respond: () => answer(301, '<html>Moved</html>', { location: 'https://relay.test/v1/user/balance/deposit?state=secret' }),
	});
	assert.ok(error instanceof NodeApiError);
	assert.match(error.message, /redirects: http:\/\/relay\.test answered HTTP 301 and points to https:\/\/relay\.test\/v1\/user\/balance\/deposit/);
	assert.match(error.message, /Use https:\/\/relay\.test as the Base URL/);
	assert.doesNotMatch(error.message, /secret/);
	assert.equal(error.requests.length, 1);
});

test('answers that are not the relay: a 2xx without its JSON, a proxy page, no relay at the address, Paywalls itself', async () => {
	const html = await runError(moneyParams('deposit', INPUTS), { respond: () => answer(200, '<html>ok</html>') });
	assert.match(html.message, /answered HTTP 200 without the expected body \(got text\), so it is not known whether this deposit was applied/);
	const proxy = await runError(moneyParams('deposit', INPUTS), { respond: () => answer(502, '<html><h1>Bad gateway</h1></html>') });
	assert.match(proxy.message, /answered HTTP 502 \("Bad gateway"\), which is not an answer of a Paywalls Relay/);
	const none = await runError(moneyParams('deposit', INPUTS), { respond: () => answer(404, 'Not Found') });
	assert.match(none.message, /No Paywalls Relay answered at http:\/\/relay\.test \(HTTP 404\)/);
	const paywalls = await runError(moneyParams('deposit', INPUTS), {
		credentials: { baseUrl: 'https://api.paywalls.ai/v1', token: 'pwr_x' },
		respond: () => assert.fail('the relay token is never sent to Paywalls'),
	});
	assert.match(paywalls.message, /is Paywalls itself, not your Paywalls Relay/);
	assert.equal(paywalls.requests.length, 0);
});

test('every problem type of the catalogue gets its own rendered message at run time', async () => {
	const problems = contract.PROBLEMS.problems;
	const relayTypes = Object.entries(problems).filter(([, p]) => p.source === 'relay').map(([name]) => name);
	const problemSchema = schema('problem.json');
	const enumTypes = problemSchema.properties?.type?.enum;
	if (enumTypes) {
		assert.deepEqual(
			enumTypes.map((t) => t.replace(contract.PROBLEM_PREFIX, '')).sort(),
			relayTypes.sort(),
			'problem.json enum and problems.json name the same relay problems',
		);
	}
	assert.ok(relayTypes.length >= 20, relayTypes.join(', '));
	for (const name of relayTypes) {
		const body = { type: `${contract.PROBLEM_PREFIX}${name}`, title: 'TITLE', status: 400, detail: 'DETAIL.' };
		const { items } = await run(moneyParams('deposit', INPUTS), { continueOnFail: true, respond: () => answer(400, body) });
		const item = items[0].json;
		assert.equal(item.details.problem, name);
		assert.equal(item.error, contract.renderProblem(body, { tool: 'n8n', op: 'deposit', status: 400 }), name);
		assert.notEqual(item.error, contract.renderProblem({ name: 'unknown-problem', title: 'TITLE', detail: 'DETAIL.' }, { tool: 'n8n', status: 400 }), name);
		assert.doesNotMatch(item.error, /\{[a-z_]+\}|\[\[|undefined/, `${name}: ${item.error}`);
	}
});

test('List Deposits: follows next_cursor, a repeated cursor ends the list, filters become the query', async () => {
	const pages = {
		start: { data: [{ id: 'led_5' }, { id: 'led_4' }], next_cursor: 'c1' },
		c1: { data: [], next_cursor: 'c2' },
		c2: { data: [{ id: 'led_3' }], next_cursor: 'c2' },
	};
	const { items, requests } = await run(
		{ resource: 'deposit', operation: 'getAll', returnAll: true, filters: { user: 'u', since: '2026-01-02T03:04:05.000Z' } },
		{ respond: (req) => answer(200, pages[req.qs.cursor ?? 'start']) },
	);
	assert.deepEqual(items.map((i) => i.json.id), ['led_5', 'led_4', 'led_3']);
	assert.deepEqual(requests.map((r) => r.qs.cursor), [undefined, 'c1', 'c2']);
	assert.deepEqual(requests[0].qs, { user: 'u', since: '2026-01-02T03:04:05.000Z', limit: 100 });
	const two = await run({ resource: 'deposit', operation: 'getAll', returnAll: false, limit: 2 }, {
		respond: (req) => answer(200, pages[req.qs.cursor ?? 'start']),
	});
	assert.deepEqual(two.items.map((i) => i.json.id), ['led_5', 'led_4']);
});

test('a version 1 node says what changed instead of doing something else', async () => {
	const error = await runError({ resource: 'balance', operation: 'deposit', user: 'u', amount: '1', reference: 'r' }, {
		typeVersion: 1,
		respond: () => assert.fail('nothing may be sent'),
	});
	assert.match(error.message, /version 1 of the node/);
	assert.match(error.description, /Deposit → Deposit Credits/);
});
