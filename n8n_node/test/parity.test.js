'use strict';
// Every case of schemas/parity-cases.json through the node's own parameter reading, without a
// relay: the refusal text, or the body, query and Idempotency-Key it sends. The live leg (the
// relay's answer, the output, the sandbox unchanged) runs in real n8n: e2e/parity.test.mjs.
const test = require('node:test');
const assert = require('node:assert/strict');
const { schema, run, answer, moneyParams } = require('./helpers');

const { cases } = schema('parity-cases.json');

test('the parity table has cases for every preset, clashes, dry run and problems', () => {
	assert.ok(cases.length >= 40, `${cases.length} cases`);
	assert.ok(cases.some((c) => c.inputs.dry_run === true));
	assert.ok(cases.some((c) => c.expect.client_error === 'metadata-clash'));
});

for (const c of cases) {
	test(`parity (request): ${c.name}`, async () => {
		const { items, requests } = await run(moneyParams(c.op, c.inputs), {
			continueOnFail: true,
			respond: () => answer(200, { balanceFormatted: '1', success: true }),
		});
		if (c.expect.client_error) {
			assert.equal(requests.length, 0, 'nothing sent');
			assert.equal(items[0].json.error, c.expect.message);
			assert.equal(items[0].json.details.problem, c.expect.client_error);
			return;
		}
		assert.equal(requests.length, 1, items[0].json.error);
		const [req] = requests;
		assert.deepEqual(req.body, c.expect.body);
		assert.deepEqual(req.qs ?? {}, c.expect.query);
		assert.equal(req.headers['Idempotency-Key'] ?? null, c.expect.key);
	});
}
