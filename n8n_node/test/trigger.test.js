'use strict';
// PaywallsRelayTrigger (the built node in dist/): its description passes the trigger rules, its
// webhook lifecycle makes the relay's REST-hook calls, and webhook() turns a POSTed event into
// one item. The relay is a stand-in that records each request.
const test = require('node:test');
const assert = require('node:assert/strict');
const { dist, schema } = require('./helpers');

const { PaywallsRelayTrigger } = dist('nodes/PaywallsRelayTrigger/PaywallsRelayTrigger.node.js');
const EVENTS = schema('events-contract.json');
const WEBHOOK = 'https://n8n.example.com/webhook/4f1c9e0a-2b3d-4e5f-8a9b-0c1d2e3f4a5b/webhook';

/** An IHookFunctions / IWebhookFunctions stand-in. respond(options) answers each relay request. */
function context({ params = {}, respond, staticData = {}, body, credentials } = {}) {
	const requests = [];
	const warnings = [];
	const node = { id: 't1', name: 'Paywalls Relay Trigger', type: 'n8n-nodes-paywalls-relay.paywallsRelayTrigger', typeVersion: 1, position: [0, 0], parameters: params };
	return {
		requests,
		warnings,
		staticData,
		getNode: () => node,
		getNodeParameter(name, fallback) {
			if (Object.prototype.hasOwnProperty.call(params, name)) return params[name];
			if (arguments.length > 1) return fallback;
			throw new Error(`no parameter ${name}`);
		},
		getNodeWebhookUrl: (name) => (name === 'default' ? WEBHOOK : undefined),
		getWorkflowStaticData: (type) => {
			assert.equal(type, 'node');
			return staticData;
		},
		getBodyData: () => body,
		async getCredentials(type) {
			assert.equal(type, 'paywallsRelayApi');
			return credentials ?? { baseUrl: 'http://relay.test/', token: 'pwr_test' };
		},
		logger: { warn: (m) => warnings.push(m), info() {}, debug() {}, error() {} },
		helpers: {
			async httpRequestWithAuthentication(type, options) {
				assert.equal(type, 'paywallsRelayApi');
				requests.push(options);
				return await respond(options);
			},
			returnJsonArray: (items) => items.map((json) => ({ json })),
		},
	};
}

const ok = (body, statusCode = 200) => ({ statusCode, headers: { 'content-type': 'application/json' }, body });
const problem = (name, status) => ({
	statusCode: status,
	headers: { 'content-type': 'application/problem+json' },
	body: { type: `urn:paywalls-relay:problem:${name}`, title: name, status, detail: `detail of ${name}` },
});

const node = () => new PaywallsRelayTrigger();
const methods = () => node().webhookMethods.default;
const event = (type, data = {}, id = 'evt_1') => ({
	id,
	type,
	version: '1',
	createdAt: '2026-11-30T16:00:00Z',
	source: 'relay',
	data: { externalUserId: 'acme:u1', user: 'acme:u1', amount: '5', ...data },
});

test('description: a webhook trigger by the community-node rules', () => {
	const d = node().description;
	assert.match(d.name, /Trigger$/);
	assert.equal(d.name, 'paywallsRelayTrigger');
	assert.deepEqual(d.inputs, []);
	assert.ok(!d.usableAsTool, 'usableAsTool not set on a trigger');
	assert.deepEqual(d.group, ['trigger']);
	assert.deepEqual(d.webhooks, [{ name: 'default', httpMethod: 'POST', responseMode: 'onReceived', path: 'webhook' }]);
	assert.deepEqual(Object.keys(node().webhookMethods.default).sort(), ['checkExists', 'create', 'delete']);
	assert.deepEqual(d.credentials, [{ name: 'paywallsRelayApi', required: true, testedBy: 'paywallsRelayApiTest' }]);
	assert.equal(typeof node().methods.credentialTest.paywallsRelayApiTest, 'function');
});

test('Event offers the contract triggers: deposit created, balance depleted, charge failed, any event', () => {
	const event = node().description.properties.find((p) => p.name === 'event');
	const values = event.options.map((o) => o.value).sort();
	assert.deepEqual(values, Object.values(EVENTS.triggers).map((t) => t.n8n.value).sort());
	assert.deepEqual(values, ['anyEvent', 'balanceDepleted', 'chargeFailed', 'depositCreated']);
	const subtitle = /^=\{\{ (\{.*\})\[\$parameter\["event"\]\] \}\}$/.exec(node().description.subtitle);
	assert.ok(subtitle, node().description.subtitle);
	assert.equal(JSON.parse(subtitle[1]).balanceDepleted, 'Balance Depleted');
});

for (const [name, spec] of Object.entries(EVENTS.triggers)) {
	test(`create (${spec.n8n.name}): POST /v1/relay/hooks with this webhook URL, the id kept in static data`, async () => {
		const ctx = context({ params: { event: spec.n8n.value, user: '' }, respond: () => ok({ id: 'hk_1' }, 201) });
		assert.equal(await methods().create.call(ctx), true);
		assert.equal(ctx.requests.length, 1);
		const [request] = ctx.requests;
		assert.equal(request.method, 'POST');
		assert.equal(request.url, 'http://relay.test/v1/relay/hooks');
		assert.deepEqual(request.body, { target_url: WEBHOOK, event_types: spec.event_types });
		assert.equal(request.disableFollowRedirect, true);
		assert.equal(ctx.staticData.hookId, 'hk_1');
		void name;
	});
}

test('create sends a trimmed User as filter.user', async () => {
	const ctx = context({ params: { event: 'chargeFailed', user: ' acme:u1 ' }, respond: () => ok({ id: 'hk_2' }, 201) });
	await methods().create.call(ctx);
	assert.deepEqual(ctx.requests[0].body.filter, { user: 'acme:u1' });
});

test('create: a token without the events operation fails with the catalogue message, nothing kept', async () => {
	const ctx = context({
		params: { event: 'balanceDepleted' },
		respond: () => ({ ...problem('forbidden', 403), body: { ...problem('forbidden', 403).body, limit: 'operation' } }),
	});
	await assert.rejects(methods().create.call(ctx), (error) => {
		assert.match(error.message, /not allowed to subscribe to events/);
		assert.match(error.message, /"events" operation/);
		return true;
	});
	assert.equal(ctx.staticData.hookId, undefined);
});

test('create: a webhook URL the relay refuses (production wants https) names the field and the fix', async () => {
	const ctx = context({
		params: { event: 'balanceDepleted' },
		respond: () => ({
			statusCode: 422,
			headers: { 'content-type': 'application/problem+json' },
			body: {
				type: 'urn:paywalls-relay:problem:validation',
				title: 'Some fields are invalid',
				status: 422,
				errors: [{ field: 'target_url', message: 'must start with https:// (RELAY_ENV=production)' }],
			},
		}),
	});
	await assert.rejects(methods().create.call(ctx), (error) => {
		assert.match(error.message, /Webhook URL: must start with https:\/\/ \(RELAY_ENV=production\)/);
		assert.match(error.message, /set WEBHOOK_URL/);
		return true;
	});
});

test('create: an answer without an id is not a subscription', async () => {
	const ctx = context({ params: { event: 'balanceDepleted' }, respond: () => ok({ ok: true }, 201) });
	await assert.rejects(methods().create.call(ctx), /relay/i);
	assert.equal(ctx.staticData.hookId, undefined);
});

test('create: a redirect is never followed and fails naming it', async () => {
	const ctx = context({
		params: { event: 'balanceDepleted' },
		respond: () => ({ statusCode: 301, headers: { location: 'https://relay.test/v1/relay/hooks' }, body: '' }),
	});
	await assert.rejects(methods().create.call(ctx), /redirect/i);
});

test('checkExists: true for the hook with this URL and settings; adopts it when static data lost it', async () => {
	const hooks = [
		{ id: 'hk_other', target_url: 'https://elsewhere.example/x', event_types: ['*'] },
		{ id: 'hk_mine', target_url: WEBHOOK, event_types: ['paywall.balance.depleted'], filter: null },
	];
	const ctx = context({ params: { event: 'balanceDepleted', user: '' }, respond: () => ok({ data: hooks }) });
	assert.equal(await methods().checkExists.call(ctx), true);
	assert.equal(ctx.staticData.hookId, 'hk_mine');
	assert.deepEqual(ctx.requests.map((r) => `${r.method} ${r.url}`), [
		`GET http://relay.test/v1/relay/hooks?target_url=${encodeURIComponent(WEBHOOK)}`,
	]);
});

test('checkExists: a hook for this URL with other settings is deleted, then false (n8n creates anew)', async () => {
	const hooks = [{ id: 'hk_old', target_url: WEBHOOK, event_types: ['paywall.balance.depleted'] }];
	const ctx = context({
		params: { event: 'chargeFailed', user: '' },
		staticData: { hookId: 'hk_old' },
		respond: (o) => (o.method === 'GET' ? ok({ data: hooks }) : { statusCode: 204, headers: {}, body: '' }),
	});
	assert.equal(await methods().checkExists.call(ctx), false);
	assert.deepEqual(ctx.requests.map((r) => `${r.method} ${r.url}`), [
		`GET http://relay.test/v1/relay/hooks?target_url=${encodeURIComponent(WEBHOOK)}`,
		'DELETE http://relay.test/v1/relay/hooks/hk_old',
	]);
	assert.equal(ctx.staticData.hookId, undefined);
});

test('checkExists: false when the relay no longer has the stored hook (it was removed)', async () => {
	const ctx = context({ params: { event: 'depositCreated' }, staticData: { hookId: 'hk_gone' }, respond: () => ok({ data: [] }) });
	assert.equal(await methods().checkExists.call(ctx), false);
	assert.equal(ctx.staticData.hookId, undefined);
});

test('checkExists: a list answer that is not the relay fails, pointing at the Base URL, instead of creating duplicates', async () => {
	for (const body of ['<html>login</html>', [], { data: 'x' }]) {
		const ctx = context({ params: { event: 'depositCreated' }, respond: () => ok(body) });
		await assert.rejects(methods().checkExists.call(ctx), (error) => {
			assert.match(error.message, /without the expected body.*Base URL/);
			return true;
		});
	}
});

test('delete: DELETE /v1/relay/hooks/<id> and forget it; an already removed hook is fine', async () => {
	for (const answer of [{ statusCode: 204, headers: {}, body: '' }, problem('not-found', 404)]) {
		const ctx = context({ params: { event: 'depositCreated' }, staticData: { hookId: 'hk/1' }, respond: () => answer });
		assert.equal(await methods().delete.call(ctx), true);
		assert.equal(ctx.requests[0].method, 'DELETE');
		assert.equal(ctx.requests[0].url, 'http://relay.test/v1/relay/hooks/hk%2F1');
		assert.equal(ctx.staticData.hookId, undefined);
	}
});

test('delete: a relay that cannot be reached returns false, logged, and keeps the id to retry', async () => {
	const ctx = context({
		params: { event: 'depositCreated' },
		staticData: { hookId: 'hk_1' },
		respond: () => {
			throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
		},
	});
	assert.equal(await methods().delete.call(ctx), false);
	assert.equal(ctx.staticData.hookId, 'hk_1');
	assert.equal(ctx.warnings.length, 1);
	assert.doesNotMatch(ctx.warnings[0], /pwr_test/);
});

test('delete: a 404 that is not the relay (no problem+json) is a failure, not "already removed"', async () => {
	const ctx = context({
		params: { event: 'depositCreated' },
		staticData: { hookId: 'hk_1' },
		respond: () => ({ statusCode: 404, headers: { 'content-type': 'text/html' }, body: '<html>nope</html>' }),
	});
	assert.equal(await methods().delete.call(ctx), false);
	assert.equal(ctx.staticData.hookId, 'hk_1');
});

test('delete without a stored hook calls nothing', async () => {
	const ctx = context({ params: { event: 'depositCreated' }, respond: () => assert.fail('no call expected') });
	assert.equal(await methods().delete.call(ctx), true);
	assert.equal(ctx.requests.length, 0);
});

test('webhook: the POSTed event becomes one item with its user on top', async () => {
	const posted = event('paywall.balance.deposit.created');
	const ctx = context({ params: { event: 'depositCreated', user: '' }, body: posted });
	const out = await node().webhook.call(ctx);
	assert.deepEqual(out.workflowData, [[{ json: { ...posted, user: 'acme:u1' } }]]);
});

test('webhook: a wrapped {delivery, event} body is unwrapped; Any Event takes every type', async () => {
	const inner = event('relay.operation.ambiguous', { externalUserId: 'acme:u9', user: 'acme:u9' });
	const ctx = context({ params: { event: 'anyEvent' }, body: { delivery: { id: 'd' }, event: inner } });
	const out = await node().webhook.call(ctx);
	assert.equal(out.workflowData[0][0].json.id, 'evt_1');
	assert.equal(out.workflowData[0][0].json.user, 'acme:u9');
});

test('webhook: starts nothing for a stray POST, another type or another user', async () => {
	const cases = [
		[{ event: 'depositCreated' }, { hello: 'world' }],
		[{ event: 'depositCreated' }, 'text'],
		[{ event: 'depositCreated' }, event('paywall.balance.depleted')],
		[{ event: 'depositCreated', user: 'acme:u2' }, event('paywall.balance.deposit.created')],
	];
	for (const [params, body] of cases) {
		const out = await node().webhook.call(context({ params, body }));
		assert.equal(out.workflowData, undefined, JSON.stringify(body));
		assert.deepEqual(out.webhookResponse, { received: true, started: false });
	}
});

test('an unknown Event value fails with the choices named', async () => {
	const ctx = context({ params: { event: 'nope' }, respond: () => ok({ id: 'x' }) });
	await assert.rejects(methods().create.call(ctx), /Unknown event "nope"/);
	assert.equal(ctx.requests.length, 0);
});
