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

/** A stand-in for n8n's IExecuteSingleFunctions: parameters of one item (and, if given, its credential). */
function fakeContext(params, { continueOnFail = false, itemIndex = 0, credentials } = {}) {
	const node = {
		id: 'n1',
		name: 'Paywalls Relay',
		type: 'n8n-nodes-paywalls-relay.paywallsRelay',
		typeVersion: 1,
		position: [0, 0],
		parameters: params,
	};
	return {
		getNodeParameter(name, fallback) {
			return Object.prototype.hasOwnProperty.call(params, name) ? params[name] : fallback;
		},
		getNode: () => node,
		getItemIndex: () => itemIndex,
		continueOnFail: () => continueOnFail,
		async getCredentials(type) {
			if (type !== 'paywallsRelayApi' || !credentials) throw new Error(`no credential of type ${type}`);
			return credentials;
		},
	};
}

module.exports = { ROOT, SCHEMAS, DIST, dist, schema, fakeContext };
