'use strict';
// Shared helpers of the unit tests. They test the built package in dist/ (what n8n loads).
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const SCHEMAS = path.resolve(ROOT, '..', 'schemas');
const DIST = path.join(ROOT, 'dist');

function dist(rel) {
	const file = path.join(DIST, rel);
	if (!fs.existsSync(file)) {
		throw new Error(`${file} is missing: run "npm run build" first`);
	}
	return require(file);
}

function schema(name) {
	return JSON.parse(fs.readFileSync(path.join(SCHEMAS, name), 'utf8'));
}

/**
 * A stand-in for n8n's IExecuteFunctions: one set of parameters per item (or one for all), a
 * credential, and an httpRequestWithAuthentication that records each request and answers
 * with respond(request) (an object {statusCode, headers, body}, or a thrown error).
 */
function executeContext(params, { continueOnFail = false, items, respond, credentials, typeVersion = 2, onError } = {}) {
	const perItem = Array.isArray(params) ? params : null;
	const count = items ?? (perItem ? perItem.length : 1);
	const node = {
		id: 'n1',
		name: 'Paywalls Relay',
		type: 'n8n-nodes-paywalls-relay.paywallsRelay',
		typeVersion,
		position: [0, 0],
		parameters: perItem ? perItem[0] : params,
		...(onError ? { onError } : {}),
	};
	const requests = [];
	const ctx = {
		requests,
		getInputData: () => Array.from({ length: count }, () => ({ json: {} })),
		getNodeParameter(name, itemIndex, fallback) {
			const p = perItem ? perItem[itemIndex] : params;
			if (Object.prototype.hasOwnProperty.call(p, name)) return p[name];
			if (fallback === undefined && arguments.length < 3) throw new Error(`no parameter ${name}`);
			return fallback;
		},
		getNode: () => node,
		continueOnFail: () => continueOnFail,
		async getCredentials(type) {
			if (type !== 'paywallsRelayApi') throw new Error(`no credential of type ${type}`);
			return credentials ?? { baseUrl: 'http://relay.test', token: 'pwr_test' };
		},
		helpers: {
			async httpRequestWithAuthentication(type, options) {
				if (type !== 'paywallsRelayApi') throw new Error(`wrong credential ${type}`);
				requests.push(options);
				if (!respond) throw new Error('no respond() given');
				return await respond(options, requests.length - 1);
			},
		},
	};
	return ctx;
}

/** Run the node's execute() with executeContext(...). Returns {items, requests} or throws. */
async function run(params, options = {}) {
	const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
	const ctx = executeContext(params, options);
	const [items] = await new PaywallsRelay().execute.call(ctx);
	return { items, requests: ctx.requests };
}

/** Run and return the error execute() threw (fails when it did not throw). */
async function runError(params, options = {}) {
	const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
	const ctx = executeContext(params, options);
	try {
		await new PaywallsRelay().execute.call(ctx);
	} catch (error) {
		error.requests = ctx.requests;
		return error;
	}
	throw new Error('execute() did not throw');
}

/** An answer of the relay: JSON body, headers as n8n hands them on (lower-case names). */
function answer(statusCode, body, headers = {}) {
	return { statusCode, headers, body };
}

/** Node parameters of a Deposit Credits step for contract inputs {user, amount, ...}. */
function moneyParams(op, inputs = {}) {
	const params = {
		resource: op === 'deposit' ? 'deposit' : 'charge',
		operation: 'create',
		options: {},
	};
	const options = {};
	for (const [name, value] of Object.entries(inputs)) {
		if (value === undefined) continue;
		if (name === 'extra_metadata') {
			// Rows as the editor stores them; anything else as an expression would give it.
			if (value === null || typeof value !== 'object') params.extraMetadata = value;
			else {
				const rows = Array.isArray(value) ? value : Object.entries(value).map(([key, v]) => ({ key, value: v }));
				params.extraMetadata = { pairs: rows };
			}
		} else if (name === 'dedupe_on') options.dedupeOn = value;
		else if (name === 'custom_dedupe_fields') options.customDedupeFields = value;
		else if (name === 'dry_run') options.dryRun = value;
		else params[name] = value;
	}
	params.options = options;
	return params;
}

module.exports = { ROOT, SCHEMAS, DIST, dist, schema, executeContext, run, runError, answer, moneyParams };
