'use strict';
// The node and credential descriptions: named as users look for them, options only where they apply.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist, schema } = require('./helpers');

const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
const { PaywallsRelayApi } = dist('credentials/PaywallsRelayApi.credentials.js');
const { displayParameterPath } = require('n8n-workflow');

const description = new PaywallsRelay().description;
const contract = schema('client-contract.json');

function operations(resource) {
	return description.properties.find((p) => p.name === 'operation' && p.displayOptions.show.resource.includes(resource)).options;
}

function fields(resource, operation, extra = {}) {
	const values = { resource, operation, ...extra };
	return description.properties.filter(
		(p) => !['resource', 'operation'].includes(p.name) && displayParameterPath(values, p, '', null, description),
	);
}

test('resources and operations are the contract n8n names: Deposit holds Deposit Credits and List Deposits', () => {
	const resources = description.properties.find((p) => p.name === 'resource').options.map((o) => o.name);
	assert.deepEqual(resources, ['Balance', 'Charge', 'Deposit']);
	assert.deepEqual(operations('deposit').map((o) => [o.name, o.value]), [['Deposit Credits', 'create'], ['List Deposits', 'getAll']]);
	assert.deepEqual(operations('charge').map((o) => [o.name, o.value]), [['Charge User', 'create']]);
	assert.deepEqual(operations('balance').map((o) => [o.name, o.value]), [['Get Balance', 'get'], ['Get Top-up Link', 'getTopupLink']]);
	for (const op of Object.values(contract.operations)) {
		const found = operations(op.n8n.resource).find((o) => o.value === op.n8n.operation);
		assert.equal(found.name, op.n8n.name);
		assert.equal(found.action, op.n8n.action);
	}
});

test('the subtitle reads like the operation: "Deposit Credits", not "create: deposit"', () => {
	const match = /^=\{\{ (\{.*\})\[\$parameter\["resource"\] \+ ":" \+ \$parameter\["operation"\]\] \}\}$/.exec(description.subtitle);
	assert.ok(match, description.subtitle);
	const names = JSON.parse(match[1]);
	assert.deepEqual(names, {
		'deposit:create': 'Deposit Credits',
		'charge:create': 'Charge User',
		'balance:get': 'Get Balance',
		'balance:getTopupLink': 'Get Top-up Link',
		'deposit:getAll': 'List Deposits',
	});
});

test('deposit and charge: the contract inputs, Reference required, advanced ones under Options', () => {
	for (const resource of ['deposit', 'charge']) {
		const shown = fields(resource, 'create');
		assert.deepEqual(shown.map((p) => p.name).sort(), ['amount', 'extraMetadata', 'options', 'reason', 'reference', 'user']);
		for (const name of ['user', 'amount', 'reference']) {
			assert.equal(shown.find((p) => p.name === name).required, true, `${resource} ${name}`);
		}
		const options = shown.find((p) => p.name === 'options').options;
		assert.deepEqual(options.map((o) => o.name), ['customDedupeFields', 'dedupeOn', 'dryRun']);
		const dedupe = options.find((o) => o.name === 'dedupeOn');
		assert.equal(dedupe.default, 'all');
		assert.deepEqual(dedupe.options.map((o) => o.value).sort(), ['all', 'amount_reference', 'custom', 'reference']);
		const dryRun = options.find((o) => o.name === 'dryRun');
		assert.equal(dryRun.type, 'boolean');
		assert.equal(dryRun.default, false);
		const reasons = shown.find((p) => p.name === 'reason').options.map((o) => o.value).filter(Boolean).sort();
		const op = resource === 'deposit' ? 'deposit' : 'charge';
		assert.deepEqual(reasons, contract.operations[op].reasons.map((r) => r.value).sort());
	}
});

test('Custom Dedupe Fields shows only when Deduplicate On is Custom, and has no default', () => {
	const options = fields('deposit', 'create').find((p) => p.name === 'options');
	const custom = options.options.find((o) => o.name === 'customDedupeFields');
	assert.equal(custom.default, '');
	const shownWith = (dedupeOn) =>
		displayParameterPath({ resource: 'deposit', operation: 'create', options: { dedupeOn } }, custom, 'options', null, description);
	assert.equal(shownWith('custom'), true);
	for (const other of ['all', 'reference', 'amount_reference']) assert.equal(shownWith(other), false, other);
});

test('Get Balance takes a user; List Deposits pages and filters', () => {
	assert.deepEqual(fields('balance', 'get').map((p) => p.name), ['user']);
	assert.deepEqual(fields('deposit', 'getAll', { returnAll: false }).map((p) => p.name), ['returnAll', 'limit', 'filters']);
});

test('credential: Docker-friendly default URL explained, token as password, tested by the node', () => {
	const cred = new PaywallsRelayApi();
	const baseUrl = cred.properties.find((p) => p.name === 'baseUrl');
	assert.equal(baseUrl.default, 'http://host.docker.internal:8000');
	assert.match(baseUrl.description, /Docker/);
	assert.match(baseUrl.description, /localhost/);
	assert.match(baseUrl.description, /without \/v1/);
	assert.equal(cred.properties.find((p) => p.name === 'token').typeOptions.password, true);
	assert.deepEqual(cred.authenticate, {
		type: 'generic',
		properties: { headers: { Authorization: '=Bearer {{$credentials.token}}' } },
	});
	// A declarative test on the credential would win over the node's (n8n checks it first).
	assert.equal(cred.test, undefined);
	assert.deepEqual(description.credentials, [{ name: 'paywallsRelayApi', required: true, testedBy: 'paywallsRelayApiTest' }]);
	assert.equal(typeof new PaywallsRelay().methods.credentialTest.paywallsRelayApiTest, 'function');
	assert.equal(description.usableAsTool, true);
	assert.equal(description.version, 2);
});
