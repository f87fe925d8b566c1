'use strict';
// The request each operation sends (body, query, headers) and how answers become items or errors.
const test = require('node:test');
const assert = require('node:assert/strict');
const Ajv2020 = require('ajv/dist/2020').default;
const { dist, schema, fakeContext } = require('./helpers');

const routing = dist('nodes/PaywallsRelay/routing.js');
const { deriveIdempotencyKey } = dist('nodes/PaywallsRelay/idempotency.js');
const { NodeApiError, NodeOperationError } = require('n8n-workflow');

const ajv = new Ajv2020({ strict: false });
ajv.addSchema(schema('common.json'));
const validateDeposit = ajv.compile(schema('deposit-request.json'));
const validateCharge = ajv.compile(schema('charge-request.json'));

const depositParams = (extra = {}) => ({
	resource: 'balance',
	operation: 'deposit',
	user: 'acme:user_123',
	amount: '10.00',
	reason: 'subscription_renewal',
	reference: 'in_1Q2w3E4r',
	extraMetadata: { pairs: [{ key: 'plan', value: 'pro' }] },
	options: {},
	...extra,
});

async function send(preSend, params) {
	return await preSend.call(fakeContext(params), { url: '/x', headers: { Accept: 'application/json' } });
}

test('deposit: body {user, amount, metadata} valid against the schema, key from all fields', async () => {
	const req = await send(routing.depositPreSend, depositParams());
	assert.deepEqual(req.body, {
		user: 'acme:user_123',
		amount: '10.00',
		metadata: { reason: 'subscription_renewal', reference: 'in_1Q2w3E4r', plan: 'pro' },
	});
	assert.ok(validateDeposit(req.body), JSON.stringify(validateDeposit.errors));
	assert.equal(req.headers['Idempotency-Key'], deriveIdempotencyKey('deposit', req.body));
	assert.match(req.headers['Idempotency-Key'], /^pwk1_[0-9a-f]{64}$/);
	assert.equal(req.headers.Accept, 'application/json', 'keeps the default headers');
	assert.equal(req.headers['Content-Type'], 'application/json');
});

test('deposit: the same fields give the same key on every run; another reference another key', async () => {
	const a = await send(routing.depositPreSend, depositParams());
	const b = await send(routing.depositPreSend, depositParams({ amount: '10' }));
	const c = await send(routing.depositPreSend, depositParams({ reference: 'in_other' }));
	assert.equal(a.headers['Idempotency-Key'], b.headers['Idempotency-Key'], '10.00 and 10 are one amount');
	assert.notEqual(a.headers['Idempotency-Key'], c.headers['Idempotency-Key']);
});

test('deposit: Deduplicate On presets map to the contract field lists', async () => {
	const cases = {
		all: ['user', 'amount', 'metadata'],
		reference: ['user', 'metadata.reference'],
		amountReference: ['user', 'amount', 'metadata.reference'],
	};
	for (const [dedupeOn, fields] of Object.entries(cases)) {
		const req = await send(routing.depositPreSend, depositParams({ options: { dedupeOn } }));
		assert.equal(req.headers['Idempotency-Key'], deriveIdempotencyKey('deposit', req.body, fields), dedupeOn);
	}
	const custom = await send(
		routing.depositPreSend,
		depositParams({ options: { dedupeOn: 'custom', customDedupeFields: ' user , metadata.plan ' } }),
	);
	assert.equal(
		custom.headers['Idempotency-Key'],
		deriveIdempotencyKey('deposit', custom.body, ['user', 'metadata.plan']),
	);
	// With "User and Reference", a different amount or reason keeps the key.
	const r1 = await send(routing.depositPreSend, depositParams({ options: { dedupeOn: 'reference' } }));
	const r2 = await send(routing.depositPreSend, depositParams({ amount: '99', reason: 'x', options: { dedupeOn: 'reference' } }));
	assert.equal(r1.headers['Idempotency-Key'], r2.headers['Idempotency-Key']);
});

test('deposit: missing reference, empty custom fields, bad paths and duplicate keys are refused', async () => {
	await assert.rejects(send(routing.depositPreSend, depositParams({ reference: '  ' })), (e) => {
		assert.ok(e instanceof NodeOperationError);
		assert.match(e.message, /Reference is empty/);
		return true;
	});
	await assert.rejects(send(routing.depositPreSend, depositParams({ user: '' })), /User is empty/);
	await assert.rejects(send(routing.depositPreSend, depositParams({ amount: '' })), /Amount is empty/);
	await assert.rejects(
		send(routing.depositPreSend, depositParams({ options: { dedupeOn: 'custom', customDedupeFields: '' } })),
		/Custom Dedupe Fields is empty/,
	);
	await assert.rejects(
		send(routing.depositPreSend, depositParams({ options: { dedupeOn: 'custom', customDedupeFields: 'user, $execution.id' } })),
		/cannot be a dedupe field/,
	);
	await assert.rejects(
		send(routing.depositPreSend, depositParams({ extraMetadata: { pairs: [{ key: 'reference', value: 'x' }] } })),
		/set twice/,
	);
});

test('deposit: a number from an expression is sent as a string; empty reason is left out', async () => {
	const req = await send(routing.depositPreSend, depositParams({ amount: 7.5, reason: '', extraMetadata: {} }));
	assert.deepEqual(req.body, { user: 'acme:user_123', amount: '7.5', metadata: { reference: 'in_1Q2w3E4r' } });
	assert.ok(validateDeposit(req.body));
});

test('charge: body valid against the schema, key derived with op "charge"', async () => {
	const params = {
		resource: 'charge',
		operation: 'charge',
		user: 'acme:user_123',
		amount: '2.50',
		reason: '',
		reference: 'job_42',
		extraMetadata: {},
		options: {},
	};
	const req = await send(routing.chargePreSend, params);
	assert.deepEqual(req.body, { user: 'acme:user_123', amount: '2.50', metadata: { reference: 'job_42' } });
	assert.ok(validateCharge(req.body), JSON.stringify(validateCharge.errors));
	assert.equal(req.headers['Idempotency-Key'], deriveIdempotencyKey('charge', req.body));
	assert.notEqual(req.headers['Idempotency-Key'], deriveIdempotencyKey('deposit', req.body));
	// Without reference or metadata the body has no metadata at all.
	const bare = await send(routing.chargePreSend, { ...params, reference: '' });
	assert.deepEqual(bare.body, { user: 'acme:user_123', amount: '2.50' });
	assert.equal(bare.headers['Idempotency-Key'], deriveIdempotencyKey('charge', { user: 'acme:user_123', amount: '2.5' }));
});

test('list deposits: filters and limit become the query', async () => {
	const req = await send(routing.listDepositsPreSend, {
		returnAll: false,
		limit: 5,
		filters: { user: 'acme:user_123', since: '2026-01-02T03:04:05.000Z' },
	});
	assert.deepEqual(req.qs, { user: 'acme:user_123', since: '2026-01-02T03:04:05.000Z', limit: 5 });
	const all = await send(routing.listDepositsPreSend, { returnAll: true, filters: {} });
	assert.deepEqual(all.qs, { limit: 100 });
	await assert.rejects(send(routing.listDepositsPreSend, { returnAll: true, filters: { since: 'yesterday-ish' } }), /not a date/);
});

function pagingContext(params, pages) {
	const calls = [];
	const ctx = fakeContext(params);
	ctx.makeRoutingRequest = async (requestData) => {
		calls.push(requestData.options.qs);
		const cursor = requestData.options.qs.cursor ?? 'start';
		const page = pages[cursor];
		return [{ json: page }];
	};
	return { ctx, calls };
}

const pages = {
	start: { data: [{ id: 'led_5' }, { id: 'led_4' }], next_cursor: 'c1' },
	// The relay scans a bounded window per page: a page may be empty and still have a cursor.
	c1: { data: [], next_cursor: 'c1b' },
	c1b: { data: [{ id: 'led_3' }, { id: 'led_2' }], next_cursor: 'c2' },
	c2: { data: [{ id: 'led_1' }], next_cursor: null },
};

test('list deposits: Return All follows next_cursor to the last page', async () => {
	const { ctx, calls } = pagingContext({ returnAll: true }, pages);
	const items = await routing.paginateDeposits.call(ctx, { options: { qs: { user: 'u', limit: 100 } } });
	assert.deepEqual(items.map((i) => i.json.id), ['led_5', 'led_4', 'led_3', 'led_2', 'led_1']);
	assert.deepEqual(calls, [
		{ user: 'u', limit: 100 },
		{ user: 'u', limit: 100, cursor: 'c1' },
		{ user: 'u', limit: 100, cursor: 'c1b' },
		{ user: 'u', limit: 100, cursor: 'c2' },
	]);
});

test('list deposits: a cursor seen twice ends the list instead of looping', async () => {
	const { ctx, calls } = pagingContext({ returnAll: true }, {
		start: { data: [{ id: 'a' }], next_cursor: 'x' },
		x: { data: [{ id: 'b' }], next_cursor: 'x' },
	});
	const items = await routing.paginateDeposits.call(ctx, { options: { qs: {} } });
	assert.deepEqual(items.map((i) => i.json.id), ['a', 'b']);
	assert.equal(calls.length, 2);
});

test('list deposits: a limit stops paging and asks only for what is missing', async () => {
	const { ctx, calls } = pagingContext({ returnAll: false, limit: 3 }, pages);
	const items = await routing.paginateDeposits.call(ctx, { options: { qs: { limit: 3 } } });
	assert.deepEqual(items.map((i) => i.json.id), ['led_5', 'led_4', 'led_3']);
	assert.deepEqual(calls, [{ limit: 3 }, { limit: 1, cursor: 'c1' }, { limit: 1, cursor: 'c1b' }]);
});

function response(statusCode, body, headers = {}) {
	return { statusCode, body, headers };
}

test('answers: a deposit answer gains the idempotency key and whether it was replayed', async () => {
	const ctx = fakeContext({});
	const [item] = await routing.handleRelayResponse.call(ctx, [], response(200, { balanceFormatted: '$10.00' }, {
		'idempotency-key': 'pwk1_abc',
		'idempotent-replayed': 'true',
	}));
	assert.deepEqual(item.json, { balanceFormatted: '$10.00', idempotencyKey: 'pwk1_abc', idempotentReplayed: true });
	const [fresh] = await routing.handleRelayResponse.call(ctx, [], response(200, '{"balanceFormatted":"$1"}', {
		'Idempotency-Key': 'pwk1_abc',
		'Idempotent-Replayed': 'false',
	}));
	assert.equal(fresh.json.idempotentReplayed, false);
	assert.equal(fresh.json.balanceFormatted, '$1');
});

test('answers: a charge with success false is data, not an error', async () => {
	const [item] = await routing.handleRelayResponse.call(fakeContext({}), [], response(200, {
		success: false,
		message: 'Insufficient balance: top up at https://pay.example/x',
	}));
	assert.equal(item.json.success, false);
	assert.match(item.json.message, /top up/);
});

const P = 'urn:paywalls-relay:problem:';

async function errorFor(status, body, headers) {
	try {
		await routing.handleRelayResponse.call(fakeContext({}, { itemIndex: 2 }), [], response(status, body, headers));
	} catch (e) {
		return e;
	}
	assert.fail('no error thrown');
}

test('errors: validation names each failing field', async () => {
	const e = await errorFor(422, {
		type: `${P}validation`,
		title: 'Invalid request',
		status: 422,
		detail: '2 fields are invalid',
		errors: [
			{ field: 'amount', pointer: '/amount', message: 'must be a positive decimal' },
			{ field: 'metadata.invoice_id', pointer: '/metadata/invoice_id', message: 'is required by this token' },
		],
	});
	assert.ok(e instanceof NodeApiError);
	assert.match(e.message, /amount: must be a positive decimal/);
	assert.match(e.message, /metadata\.invoice_id: is required by this token/);
	assert.equal(e.httpCode, '422');
	assert.equal(e.context.itemIndex, 2);
});

test('errors: a token limit refusal names the limit and what remains', async () => {
	const e = await errorFor(403, {
		type: `${P}forbidden`,
		title: 'Forbidden',
		status: 403,
		detail: 'The daily cap of 100 would be exceeded',
		limit: 'daily_cap',
		remaining: '3.50',
	});
	assert.match(e.message, /limit "daily_cap"/);
	assert.match(e.message, /remaining: 3\.50/);
	assert.match(e.description, /daily cap of 100/);
	const op = await errorFor(403, { type: `${P}forbidden`, title: 'Forbidden', status: 403, detail: 'no charge', limit: 'operation' });
	assert.match(op.message, /limit "operation"/);
});

test('errors: 401, key reuse, in-flight, rate limit, ambiguous, non-JSON', async () => {
	assert.match((await errorFor(401, { type: `${P}unauthorized`, title: 'Unauthorized', status: 401, detail: 'token revoked' })).message, /refused the token: token revoked/);
	assert.match((await errorFor(422, { type: `${P}idempotency-key-reused`, title: 't', status: 422, detail: 'd' })).message, /used before with different fields/);
	assert.match((await errorFor(409, { type: `${P}idempotency-in-flight`, title: 't', status: 409, detail: 'd' }, { 'Retry-After': '1' })).message, /still being processed.*Retry after 1 s/);
	assert.match((await errorFor(429, { type: `${P}rate-limited`, title: 't', status: 429, detail: 'd' }, { 'retry-after': '7' })).message, /rate limit.*Retry after 7 s/);
	assert.match((await errorFor(504, { type: `${P}upstream-ambiguous`, title: 't', status: 504, detail: 'd' })).message, /Retrying with the same fields is safe/);
	assert.match((await errorFor(400, { type: `${P}upstream-rejected`, title: 't', status: 400, detail: 'Deposits need Default mode' })).message, /Paywalls refused the call: Deposits need Default mode/);
	const html = await errorFor(502, '<html>Bad gateway</html>');
	assert.match(html.message, /HTTP 502: <html>Bad gateway/);
	assert.equal(html.httpCode, '502');
});

test('errors: with Continue On Fail the error becomes item data', async () => {
	const ctx = fakeContext({}, { continueOnFail: true });
	const items = await routing.handleRelayResponse.call(ctx, [], response(403, {
		type: `${P}forbidden`,
		title: 'Forbidden',
		status: 403,
		detail: 'over cap',
		limit: 'max_amount',
		remaining: '0',
	}));
	assert.equal(items.length, 1);
	assert.match(items[0].json.error, /limit "max_amount"/);
	assert.equal(items[0].json.details.problem, 'forbidden');
	assert.equal(items[0].json.details.limit, 'max_amount');
	assert.equal(items[0].json.details.status, 403);
	// The shape n8n's error output recognises: only error/message/details keys.
	assert.ok(Object.keys(items[0].json).every((k) => ['error', 'message', 'details'].includes(k)));
});

test('get balance: the output names the user', async () => {
	const [item] = await routing.addUserToBalance.call(fakeContext({ user: 'u1' }), [{ json: { balance: '1000', balanceFormatted: '$10.00' } }]);
	assert.deepEqual(item.json, { user: 'u1', balance: '1000', balanceFormatted: '$10.00' });
});

test('errors: every problem type of schemas/README.md gets its own message', async () => {
	const fs = require('node:fs');
	const path = require('node:path');
	const { SCHEMAS } = require('./helpers');
	const { describeRelayError } = dist('nodes/PaywallsRelay/problem.js');
	const readme = fs.readFileSync(path.join(SCHEMAS, 'README.md'), 'utf8');
	const rows = [...readme.matchAll(/^\|\s*([0-9x, /]+?)\s*\|\s*(`[a-z-]+`(?:,\s*`[a-z-]+`)*)\s*\|/gm)];
	const names = rows.flatMap((r) => [...r[2].matchAll(/`([a-z-]+)`/g)].map((m) => m[1]));
	assert.ok(names.length >= 14, `found only ${names.join(', ')}`);
	for (const name of names) {
		const info = describeRelayError(400, { type: `${P}${name}`, title: 'TITLE', status: 400, detail: 'DETAIL' });
		assert.equal(info.problem, name);
		assert.notEqual(info.message, 'TITLE: DETAIL', `no specific message for ${name}`);
	}
});

test('errors: max_amount states the per-call maximum; 401 gives the reason; 404 points at the base URL', async () => {
	const max = await errorFor(403, { type: `${P}forbidden`, title: 'F', status: 403, detail: 'd', limit: 'max_amount', remaining: '5' });
	assert.match(max.message, /limit "max_amount" refused this call \(maximum per call: 5\)/);
	const revoked = await errorFor(401, { type: `${P}unauthorized`, title: 'U', status: 401, detail: 'This token was revoked.', reason: 'revoked' });
	assert.match(revoked.message, /refused the token \(revoked\)/);
	const nf = await errorFor(404, { type: `${P}not-found`, title: 'Not found', status: 404, detail: 'No such path' });
	assert.match(nf.message, /Base URL/);
});
