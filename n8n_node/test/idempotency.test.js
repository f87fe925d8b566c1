'use strict';
// Every vector of schemas/idempotency-vectors.json, valid and invalid, through the key
// derivation the node ships (dist/.../generated/relay-contract.js).
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { dist, schema } = require('./helpers');

const { deriveKey, canonicalJson, ContractError } = dist('nodes/PaywallsRelay/generated/relay-contract.js');
const vectors = schema('idempotency-vectors.json');

function bodyOf(vector) {
	// "undefined": paths whose member is present but undefined (JSON cannot carry it).
	const body = structuredClone(vector.body);
	for (const path of vector.undefined ?? []) {
		const parts = path.split('.');
		let at = body;
		for (const part of parts.slice(0, -1)) at = at[part];
		at[parts[parts.length - 1]] = undefined;
	}
	return body;
}

test('the vector file is v1 and holds valid and invalid vectors', () => {
	assert.equal(vectors.version, 1);
	assert.ok(vectors.vectors.filter((v) => v.expected).length >= 54);
	assert.ok(vectors.vectors.filter((v) => v.expected_error).length >= 10);
});

for (const v of vectors.vectors) {
	test(`vector: ${v.name}`, () => {
		const call = () => (v.fields === undefined ? deriveKey(v.op, bodyOf(v)) : deriveKey(v.op, bodyOf(v), v.fields));
		if (v.expected_error) {
			assert.throws(call, (error) => {
				assert.ok(error instanceof ContractError, `${error}`);
				assert.equal(error.code, v.expected_error.error);
				return true;
			});
		} else {
			assert.equal(call(), v.expected);
		}
	});
}

test('the key is pwk1_ + sha256 of the JCS text', () => {
	const body = { user: 'u1', amount: '1.50', metadata: { b: 1, a: [true, null] } };
	const text = '{"fields":{"amount":"1.5","metadata":{"a":[true,null],"b":1},"user":"u1"},"op":"deposit","v":1}';
	assert.equal(canonicalJson({ v: 1, op: 'deposit', fields: { amount: '1.5', metadata: body.metadata, user: 'u1' } }), text);
	const hex = crypto.createHash('sha256').update(text, 'utf8').digest('hex');
	assert.equal(deriveKey('deposit', body), `pwk1_${hex}`);
});
