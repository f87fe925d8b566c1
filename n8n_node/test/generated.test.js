'use strict';
// nodes/PaywallsRelay/generated/ is what `npm run generate` makes from ../schemas, unchanged.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { outputs, OUT } = require('../scripts/generate.js');

test('generated files equal a fresh `npm run generate` (properties, relay-contract.js, relay-events.js, their JSON)', () => {
	const fresh = outputs();
	assert.deepEqual(Object.keys(fresh).sort(), [
		'client-contract.json',
		'events-contract.json',
		'problems.json',
		'properties.ts',
		'relay-contract.js',
		'relay-events.js',
		'trigger-properties.ts',
	]);
	for (const [name, text] of Object.entries(fresh)) {
		const committed = fs.readFileSync(path.join(OUT, name), 'utf8');
		assert.ok(committed === text, `${name} differs from ../schemas: run "npm run generate" and commit`);
	}
});

test('the example workflow exists for both install methods, the same but for the node type', () => {
	const { exampleOutputs, EXAMPLES, PACKAGE_TYPE, CUSTOM_TYPE } = require('../scripts/generate.js');
	for (const [name, text] of Object.entries(exampleOutputs())) {
		assert.equal(fs.readFileSync(path.join(EXAMPLES, name), 'utf8'), text, `${name}: run "npm run generate"`);
	}
	const pkg = JSON.parse(fs.readFileSync(path.join(EXAMPLES, 'first-workflow.json'), 'utf8'));
	const custom = JSON.parse(fs.readFileSync(path.join(EXAMPLES, 'first-workflow.custom-extensions.json'), 'utf8'));
	const types = (wf) => wf.nodes.map((n) => n.type).filter((t) => t.endsWith('.paywallsRelay'));
	assert.deepEqual(types(pkg), [PACKAGE_TYPE, PACKAGE_TYPE]);
	assert.deepEqual(types(custom), [CUSTOM_TYPE, CUSTOM_TYPE]);
	for (const node of pkg.nodes.filter((n) => n.type === PACKAGE_TYPE)) assert.equal(node.typeVersion, 2, node.name);
});
