'use strict';
// The node and credential descriptions: operations, routing and the request each one sends.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist } = require('./helpers');

const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
const { PaywallsRelayApi } = dist('credentials/PaywallsRelayApi.credentials.js');
const routing = dist('nodes/PaywallsRelay/routing.js');

const description = new PaywallsRelay().description;

function operation(resource, value) {
	const prop = description.properties.find(
		(p) => p.name === 'operation' && p.displayOptions.show.resource.includes(resource),
	);
	assert.ok(prop, `no operation list for ${resource}`);
	const option = prop.options.find((o) => o.value === value);
	assert.ok(option, `no operation ${resource}/${value}`);
	return option;
}

function field(name, resource, op) {
	const found = description.properties.filter(
		(p) =>
			p.name === name &&
			p.displayOptions?.show?.resource?.includes(resource) &&
			p.displayOptions?.show?.operation?.includes(op),
	);
	assert.equal(found.length, 1, `field ${name} of ${resource}/${op}`);
	return found[0];
}

test('node description: tool use, subtitle, credential and request defaults', () => {
	assert.equal(description.name, 'paywallsRelay');
	assert.equal(description.usableAsTool, true);
	assert.match(description.subtitle, /\$parameter\["operation"\]/);
	assert.deepEqual(description.credentials, [{ name: 'paywallsRelayApi', required: true }]);
	assert.equal(description.requestDefaults.baseURL, '={{$credentials.baseUrl}}');
	// n8n's credential test runs with the node's requestDefaults: ignoring HTTP errors there
	// would let a refused token pass the test.
	assert.equal(description.requestDefaults.ignoreHttpStatusErrors, undefined);
	const resources = description.properties.find((p) => p.name === 'resource').options.map((o) => o.value);
	assert.deepEqual(resources, ['balance', 'charge', 'deposit']);
});

test('credential: base URL, token as password, Bearer header, test GET /v1/relay/me', () => {
	const cred = new PaywallsRelayApi();
	assert.equal(cred.name, 'paywallsRelayApi');
	assert.equal(cred.displayName, 'Paywalls Relay API');
	const token = cred.properties.find((p) => p.name === 'token');
	assert.equal(token.typeOptions.password, true);
	assert.ok(cred.properties.find((p) => p.name === 'baseUrl'));
	assert.deepEqual(cred.authenticate, {
		type: 'generic',
		properties: { headers: { Authorization: '=Bearer {{$credentials.token}}' } },
	});
	assert.equal(cred.test.request.url, '/v1/relay/me');
	assert.equal(cred.test.request.method, 'GET');
	assert.equal(cred.test.request.baseURL, '={{$credentials.baseUrl}}');
});

test('operation routes match the relay contract', () => {
	const routes = {
		'balance/deposit': ['POST', '/v1/user/balance/deposit'],
		'balance/get': ['GET', '/v1/user/balance'],
		'charge/charge': ['POST', '/v1/user/charge'],
		'deposit/list': ['GET', '/v1/relay/deposits'],
	};
	for (const [key, [method, url]] of Object.entries(routes)) {
		const [resource, op] = key.split('/');
		const r = operation(resource, op).routing;
		assert.equal(r.request.method, method, key);
		assert.equal(r.request.url, url, key);
		assert.equal(r.request.ignoreHttpStatusErrors, true, `${key} reads error answers itself`);
		assert.ok(r.output.postReceive.includes(routing.handleRelayResponse), `${key} maps errors`);
	}
	assert.deepEqual(operation('balance', 'deposit').routing.send.preSend, [routing.depositPreSend]);
	assert.deepEqual(operation('charge', 'charge').routing.send.preSend, [routing.chargePreSend]);
	const list = operation('deposit', 'list').routing;
	assert.equal(list.send.paginate, true);
	assert.equal(list.operations.pagination, routing.paginateDeposits);
	assert.deepEqual(field('user', 'balance', 'get').routing.send, { type: 'query', property: 'user' });
});

test('deposit and charge fields: user, amount, reason, reference, extra metadata, Deduplicate On', () => {
	for (const [resource, op] of [['balance', 'deposit'], ['charge', 'charge']]) {
		for (const name of ['user', 'amount', 'reason', 'reference', 'extraMetadata', 'options']) {
			field(name, resource, op);
		}
		const options = field('options', resource, op).options;
		const dedupe = options.find((o) => o.name === 'dedupeOn');
		assert.equal(dedupe.default, 'all');
		assert.deepEqual(dedupe.options.map((o) => o.value).sort(), ['all', 'amountReference', 'custom', 'reference']);
	}
	assert.equal(field('reference', 'balance', 'deposit').required, true);
});
