'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { dist, schema } = require('./helpers');

const {
	deriveIdempotencyKey,
	canonicalJson,
	canonicalAmount,
	idempotencyPayload,
	DEFAULT_DEDUPE_FIELDS,
} = dist('nodes/PaywallsRelay/idempotency.js');

const vectors = schema('idempotency-vectors.json');

test('the vector file is the v1 contract and has vectors', () => {
	assert.equal(vectors.version, 1);
	assert.ok(vectors.vectors.length >= 54, `only ${vectors.vectors.length} vectors`);
});

for (const v of vectors.vectors) {
	test(`vector: ${v.name}`, () => {
		const key = v.fields === undefined
			? deriveIdempotencyKey(v.op, v.body)
			: deriveIdempotencyKey(v.op, v.body, v.fields);
		assert.equal(key, v.expected);
	});
}

test('the key is pwk1_ + sha256 of the JCS text', () => {
	const body = { user: 'u1', amount: '1.50', metadata: { b: 1, a: [true, null] } };
	const text = canonicalJson(idempotencyPayload('deposit', body));
	assert.equal(
		text,
		'{"fields":{"amount":"1.5","metadata":{"a":[true,null],"b":1},"user":"u1"},"op":"deposit","v":1}',
	);
	const hex = crypto.createHash('sha256').update(text, 'utf8').digest('hex');
	assert.equal(deriveIdempotencyKey('deposit', body), `pwk1_${hex}`);
});

test('default dedupe fields are the whole body', () => {
	assert.deepEqual([...DEFAULT_DEDUPE_FIELDS], ['user', 'amount', 'metadata']);
});

test('JCS: numbers, -0, strings and key order', () => {
	assert.equal(canonicalJson(-0), '0');
	assert.equal(canonicalJson(1e21), '1e+21');
	assert.equal(canonicalJson(1e-7), '1e-7');
	assert.equal(canonicalJson(0.1), '0.1');
	assert.equal(canonicalJson('a"\\\n\u0001</'), '"a\\"\\\\\\n\\u0001</"');
	// U+FF41 sorts after U+1F600's high surrogate (0xD83D) by UTF-16 code units.
	assert.equal(canonicalJson({ '\uff41': 1, '\u{1F600}': 2, é: 3, z: 4 }), '{"z":4,"é":3,"😀":2,"ａ":1}');
	assert.throws(() => canonicalJson(Number.NaN));
	assert.throws(() => canonicalJson(Infinity));
	assert.throws(() => canonicalJson(undefined));
});

test('canonical amount text', () => {
	const cases = { '10.00': '10', '10.0': '10', '0.50': '0.5', '007.50': '7.5', '100': '100', '0.000001': '0.000001', '00.5': '0.5' };
	for (const [input, want] of Object.entries(cases)) assert.equal(canonicalAmount(input), want, input);
	assert.equal(canonicalAmount(10), '10');
	assert.equal(canonicalAmount(2.5), '2.5');
});

test('the key ignores everything but the listed fields', () => {
	const a = { user: 'u', amount: '5', metadata: { reference: 'r1', note: 'x' } };
	const b = { user: 'u', amount: '7', metadata: { reference: 'r1', note: 'y' } };
	const fields = ['user', 'metadata.reference'];
	assert.equal(deriveIdempotencyKey('deposit', a, fields), deriveIdempotencyKey('deposit', b, fields));
	assert.notEqual(deriveIdempotencyKey('deposit', a), deriveIdempotencyKey('deposit', b));
	assert.notEqual(deriveIdempotencyKey('deposit', a), deriveIdempotencyKey('charge', a));
});

test('unknown dedupe paths and operations are refused', () => {
	assert.throws(() => deriveIdempotencyKey('deposit', { user: 'u' }, ['execution.id']), /not a dedupe field/);
	assert.throws(() => deriveIdempotencyKey('deposit', { user: 'u' }, ['metadata.']), /not a dedupe field/);
	assert.throws(() => deriveIdempotencyKey('refund', { user: 'u' }), /Unknown idempotency operation/);
});
