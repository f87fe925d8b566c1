#!/usr/bin/env node
'use strict';
// `npm run generate`: the node's contract files, made from ../schemas (the single source).
//
//   nodes/PaywallsRelay/generated/relay-contract.js   copy of schemas/clients/relay-contract.js
//   nodes/PaywallsRelay/generated/client-contract.json copy of schemas/client-contract.json
//   nodes/PaywallsRelay/generated/problems.json        copy of schemas/problems.json
//   nodes/PaywallsRelay/generated/properties.ts        resource, operations and input fields
//   nodes/PaywallsRelay/generated/relay-events.js      copy of schemas/clients/relay-events.js
//   nodes/PaywallsRelay/generated/events-contract.json copy of schemas/events-contract.json
//   nodes/PaywallsRelay/generated/trigger-properties.ts the trigger node's Event and User fields
//
// The output is committed (a published package cannot reach ../schemas), and
// test/generated.test.js fails when running this again would change it.
// `node scripts/generate.js --check` exits 1 and names the files that differ, writing nothing.
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const SCHEMAS = path.resolve(ROOT, '..', 'schemas');
const OUT = path.join(ROOT, 'nodes', 'PaywallsRelay', 'generated');

const COPIES = {
	'relay-contract.js': path.join(SCHEMAS, 'clients', 'relay-contract.js'),
	'client-contract.json': path.join(SCHEMAS, 'client-contract.json'),
	'problems.json': path.join(SCHEMAS, 'problems.json'),
	'relay-events.js': path.join(SCHEMAS, 'clients', 'relay-events.js'),
	'events-contract.json': path.join(SCHEMAS, 'events-contract.json'),
};

/** snake_case contract key -> camelCase n8n parameter name ("extra_metadata" -> "extraMetadata"). */
const parameterName = (key) => key.replace(/_([a-z])/g, (_m, c) => c.toUpperCase());

function fill(text, vars) {
	return text.replace(/\{([a-z_]+)\}/g, (m, name) => (vars[name] !== undefined ? vars[name] : m));
}

/**
 * n8n's description style (enforced by its lint rules): one sentence has no final period, more
 * than one keep theirs; a boolean starts with "Whether".
 */
function n8nDescription(text, type) {
	let out = text.trim();
	if (type === 'boolean' && !/^Whether\b/.test(out)) {
		out = `Whether to ${out[0].toLowerCase()}${out.slice(1)}`;
	}
	const sentences = out.split(/(?<=[.!?])\s+(?=[A-Z])/);
	if (sentences.length === 1) out = out.replace(/\.$/, '');
	return out;
}

const byName = (a, b) => a.name.localeCompare(b.name);

/** The n8n property of one contract input for one operation. */
function inputProperty(contract, opName, inputKey) {
	const op = contract.operations[opName];
	const input = contract.inputs[inputKey];
	const vars = {
		verb: op.verb,
		reference_example: op.reference_example,
		reason_help: op.reason_help,
	};
	const description = n8nDescription(fill(fill(input.help, vars), vars), input.type);
	const base = { displayName: input.label, name: parameterName(inputKey) };
	let prop;
	switch (input.type) {
		case 'string':
			if (input.choices_from) {
				// A choice, or any text through an expression ("Pick one or type your own").
				const choices = op[input.choices_from].map((c) => ({ name: c.label, value: c.value }));
				prop = {
					...base,
					type: 'options',
					options: [{ name: 'None', value: '' }, ...choices].sort(byName),
					default: '',
					description: `${description.replace(/ Pick one or type your own\.?$/, '')} Pick one, or use an expression for any other text.`,
				};
			} else {
				prop = { ...base, type: 'string', default: '', description };
				if (input.placeholder) prop.placeholder = input.placeholder;
			}
			break;
		case 'dictionary':
			prop = {
				...base,
				type: 'fixedCollection',
				placeholder: 'Add Metadata',
				default: {},
				typeOptions: { multipleValues: true },
				description,
				options: [
					{
						displayName: 'Pair',
						name: 'pairs',
						values: [
							{ displayName: 'Key', name: 'key', type: 'string', default: '', placeholder: 'plan' },
							{ displayName: 'Value', name: 'value', type: 'string', default: '', placeholder: 'pro' },
						],
					},
				],
			};
			break;
		case 'choice':
			prop = {
				...base,
				type: 'options',
				options: contract[input.choices_from]
					.map((c) => ({ name: c.label, value: c.value, description: c.help.replace(/\.$/, '') }))
					.sort(byName),
				default: input.default,
				description,
			};
			break;
		case 'boolean':
			prop = { ...base, type: 'boolean', default: input.default === true, description };
			break;
		default:
			throw new Error(`client-contract.json: input ${inputKey} has a type this generator does not know: ${input.type}`);
	}
	if (input.required && !input.advanced) prop.required = true;
	if (input.show_when) {
		// Shown only when it applies, e.g. Custom Dedupe Fields when Deduplicate On is Custom.
		prop.displayOptions = {
			show: Object.fromEntries(Object.entries(input.show_when).map(([k, v]) => [parameterName(k), [v]])),
		};
	}
	return prop;
}

function buildProperties(contract) {
	const ops = Object.entries(contract.operations);
	const resources = [...new Set(ops.map(([, op]) => op.n8n.resource))];
	const resourceLabel = (r) => r[0].toUpperCase() + r.slice(1);
	const resourceProperty = {
		displayName: 'Resource',
		name: 'resource',
		type: 'options',
		noDataExpression: true,
		options: resources.map((r) => ({ name: resourceLabel(r), value: r })).sort(byName),
		default: contract.operations.deposit.n8n.resource,
	};
	const operationProperties = resources.map((resource) => {
		const mine = ops.filter(([, op]) => op.n8n.resource === resource);
		return {
			displayName: 'Operation',
			name: 'operation',
			type: 'options',
			noDataExpression: true,
			displayOptions: { show: { resource: [resource] } },
			options: mine
				.map(([, op]) => ({
					name: op.n8n.name,
					value: op.n8n.operation,
					action: op.n8n.action,
					description: n8nDescription(op.description.split(/(?<=\.)\s/)[0], 'string'),
				}))
				.sort(byName),
			default: mine[0][1].n8n.operation,
		};
	});

	const fields = [];
	for (const [opName, op] of ops) {
		const show = { resource: [op.n8n.resource], operation: [op.n8n.operation] };
		const advanced = [];
		for (const inputKey of op.inputs) {
			const input = contract.inputs[inputKey];
			const prop = inputProperty(contract, opName, inputKey);
			if (input.advanced) {
				advanced.push(prop);
				continue;
			}
			if (opName === 'deposits') {
				// List Deposits takes user as a filter; its paging fields are n8n's own (listDeposits.ts).
				continue;
			}
			prop.displayOptions = { show };
			fields.push(prop);
		}
		if (advanced.length) {
			fields.push({
				displayName: 'Options',
				name: 'options',
				type: 'collection',
				placeholder: 'Add Option',
				default: {},
				displayOptions: { show },
				options: advanced.sort((a, b) => a.displayName.localeCompare(b.displayName)),
			});
		}
	}

	// Where each contract input is read from: a top-level parameter or one of Options.
	const parameters = {};
	for (const [key, input] of Object.entries(contract.inputs)) {
		parameters[key] = input.advanced ? `options.${parameterName(key)}` : parameterName(key);
	}
	const operationOf = Object.fromEntries(ops.map(([name, op]) => [`${op.n8n.resource}:${op.n8n.operation}`, name]));
	const names = Object.fromEntries(ops.map(([, op]) => [`${op.n8n.resource}:${op.n8n.operation}`, op.n8n.name]));
	// The node's subtitle under its name on the canvas: "Deposit Credits", not "create: deposit".
	const subtitle = `={{ ${JSON.stringify(names)}[$parameter["resource"] + ":" + $parameter["operation"]] }}`;
	return { resourceProperty, operationProperties, fields, parameters, operationOf, subtitle };
}

function literal(value) {
	return JSON.stringify(value, null, '\t');
}

function propertiesSource(contract) {
	const p = buildProperties(contract);
	return `// GENERATED by scripts/generate.js from schemas/client-contract.json: do not edit; run \`npm run generate\`.
import type { INodeProperties } from 'n8n-workflow';

export const SUBTITLE = ${JSON.stringify(p.subtitle)};

/** "resource:operation" -> the contract's operation name. */
export const OPERATION_OF: Record<string, string> = ${literal(p.operationOf)};

/** Contract input -> the n8n parameter holding it ("options.x" is inside the Options collection). */
export const PARAMETER_OF: Record<string, string> = ${literal(p.parameters)};

export const resourceProperty: INodeProperties = ${literal(p.resourceProperty)};

export const operationProperties: INodeProperties[] = ${literal(p.operationProperties)};

export const inputProperties: INodeProperties[] = ${literal(p.fields)};
`;
}

/** The trigger node's fields (PaywallsRelayTrigger): Event from the contract's triggers, and User. */
function triggerPropertiesSource(events) {
	const triggers = Object.entries(events.triggers);
	const eventProperty = {
		displayName: 'Event',
		name: 'event',
		type: 'options',
		noDataExpression: true,
		required: true,
		options: triggers
			.map(([, t]) => ({ name: t.n8n.name, value: t.n8n.value, description: t.n8n.description }))
			.sort(byName),
		default: events.triggers.deposit_created.n8n.value,
		description: 'Which events start the workflow',
	};
	const userProperty = {
		displayName: events.filter_user.label,
		name: 'user',
		type: 'string',
		default: '',
		placeholder: events.filter_user.placeholder,
		description: n8nDescription(events.filter_user.help, 'string'),
	};
	const triggerOf = Object.fromEntries(triggers.map(([name, t]) => [t.n8n.value, name]));
	const names = Object.fromEntries(triggers.map(([, t]) => [t.n8n.value, t.n8n.name]));
	// Under the node's name on the canvas: "Balance Depleted", not "balanceDepleted".
	const subtitle = `={{ ${JSON.stringify(names)}[$parameter["event"]] }}`;
	return `// GENERATED by scripts/generate.js from schemas/events-contract.json: do not edit; run \`npm run generate\`.
import type { INodeProperties } from 'n8n-workflow';

export const TRIGGER_SUBTITLE = ${JSON.stringify(subtitle)};

/** The Event parameter's value -> the contract's trigger name. */
export const TRIGGER_OF: Record<string, string> = ${literal(triggerOf)};

export const eventProperty: INodeProperties = ${literal(eventProperty)};

export const userProperty: INodeProperties = ${literal(userProperty)};
`;
}

function outputs() {
	const files = {};
	for (const [name, source] of Object.entries(COPIES)) {
		files[name] = fs.readFileSync(source, 'utf8');
	}
	const contract = JSON.parse(files['client-contract.json']);
	files['properties.ts'] = propertiesSource(contract);
	files['trigger-properties.ts'] = triggerPropertiesSource(JSON.parse(files['events-contract.json']));
	return files;
}

/**
 * The example workflow for each install method. n8n names a node's type after where it was
 * loaded from: "n8n-nodes-paywalls-relay.paywallsRelay" when installed as a package (Community
 * Nodes screen, npm in ~/.n8n/nodes), "CUSTOM.paywallsRelay" when loaded through
 * N8N_CUSTOM_EXTENSIONS or ~/.n8n/custom. One file cannot serve both, so the custom one is made
 * from the package one.
 */
const EXAMPLES = path.join(ROOT, 'examples');
const PACKAGE_TYPE = 'n8n-nodes-paywalls-relay.paywallsRelay';
const CUSTOM_TYPE = 'CUSTOM.paywallsRelay';

function exampleOutputs() {
	const source = fs.readFileSync(path.join(EXAMPLES, 'first-workflow.json'), 'utf8');
	const workflow = JSON.parse(source);
	for (const node of workflow.nodes) {
		if (node.type === PACKAGE_TYPE) node.type = CUSTOM_TYPE;
	}
	workflow.name = `${workflow.name} (N8N_CUSTOM_EXTENSIONS)`;
	return { 'first-workflow.custom-extensions.json': `${JSON.stringify(workflow, null, 2)}\n` };
}

function main() {
	const check = process.argv.includes('--check');
	const targets = [
		...Object.entries(outputs()).map(([name, text]) => [path.join(OUT, name), name, text]),
		...Object.entries(exampleOutputs()).map(([name, text]) => [path.join(EXAMPLES, name), name, text]),
	];
	const differ = [];
	for (const [file, name, text] of targets) {
		const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
		if (current === text) continue;
		differ.push(name);
		if (!check) {
			fs.mkdirSync(OUT, { recursive: true });
			fs.writeFileSync(file, text);
		}
	}
	if (check && differ.length) {
		console.error(`generated files differ from ../schemas: ${differ.join(', ')}; run "npm run generate"`);
		process.exit(1);
	}
	console.log(differ.length ? `${check ? 'differ' : 'wrote'}: ${differ.join(', ')}` : 'generated files are up to date');
}

module.exports = { outputs, exampleOutputs, buildProperties, parameterName, OUT, EXAMPLES, PACKAGE_TYPE, CUSTOM_TYPE };
if (require.main === module) main();
