'use strict';
// nodes/PaywallsRelay/generated/ is what `npm run generate` makes from ../schemas, unchanged.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { outputs, OUT } = require('../scripts/generate.js');

test('generated files equal a fresh `npm run generate` (properties, relay-contract.js, its JSON)', () => {
	const fresh = outputs();
	assert.deepEqual(Object.keys(fresh).sort(), ['client-contract.json', 'problems.json', 'properties.ts', 'relay-contract.js']);
	for (const [name, text] of Object.entries(fresh)) {
		const committed = fs.readFileSync(path.join(OUT, name), 'utf8');
		assert.ok(committed === text, `${name} differs from ../schemas: run "npm run generate" and commit`);
	}
});
