// End-to-end test with a real n8n 2.41.1: the packed node is installed the way a self-hosted
// user installs it (npm install in ~/.n8n/nodes, and again through N8N_CUSTOM_EXTENSIONS),
// credentials and workflows are imported with `n8n import:*`, and `n8n execute --id` runs them
// headless against the relay and sandbox of `paywalls-relay dev-stack --json`. The assertions
// read the sandbox's own record of credits. The parity leg runs every case of
// schemas/parity-cases.json through the node in this n8n.
//
// Needs: the built package (npm run build), the relay's virtualenv (make venv, or
// PAYWALLS_RELAY_BIN), and install-n8n.sh's cache (installed on first use, reused after).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { devStackInfo, freePort, relayBin, tail } from './helpers.mjs';

const require = createRequire(import.meta.url);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const PKG = path.resolve(HERE, '..');
const REPO = path.resolve(PKG, '..');
const NODE_TYPE = 'n8n-nodes-paywalls-relay.paywallsRelay';
const CRED = { id: 'pwrE2eCred00001', name: 'Relay e2e' };
const LIMITED_CRED = { id: 'pwrE2eCred00002', name: 'Relay e2e (max 5, deposit only)' };
// A "wrong Base URL": a server that redirects every request to the real relay (307 keeps the
// method and body), so a node that followed redirects would credit through it.
const REDIRECT_CRED = { id: 'pwrE2eCred00003', name: 'Relay e2e (redirecting Base URL)' };
const REDIRECTOR = `
const http = require('node:http');
const [port, target] = process.argv.slice(1);
http.createServer((req, res) => {
	console.log(req.method + ' ' + req.url);
	req.resume();
	res.writeHead(307, { Location: target + req.url });
	res.end();
}).listen(Number(port), '127.0.0.1');
`;

const { deriveKey } = require(path.join(PKG, 'dist/nodes/PaywallsRelay/generated/relay-contract.js'));
const deriveIdempotencyKey = (op, body) => deriveKey(op, body);

const children = [];
const timings = {};
let tmp;
let sandboxUrl;
let relayUrl;
let stack; // the dev-stack's JSON line
const tokens = {}; // label -> token text
let redirector; // { url, log }
let n8n; // { node, bin, env }
let n8nCustomEnv; // n8n with the node loaded through N8N_CUSTOM_EXTENSIONS

// --- small helpers --------------------------------------------------------------------------

function start(name, cmd, args, options) {
	const log = path.join(tmp, `${name}.log`);
	const fd = fs.openSync(log, 'a');
	const child = spawn(cmd, args, { ...options, stdio: ['ignore', fd, fd] });
	fs.closeSync(fd);
	child.logFile = log;
	child.exited = null;
	child.on('exit', (code, signal) => {
		child.exited = { code, signal };
	});
	children.push(child);
	return child;
}

async function waitForHttp(url, child, seconds = 60) {
	const deadline = Date.now() + seconds * 1000;
	while (Date.now() < deadline) {
		if (child.exited) {
			throw new Error(`${path.basename(child.logFile)} exited ${JSON.stringify(child.exited)}:\n${tail(child.logFile)}`);
		}
		try {
			const res = await fetch(url);
			if (res.ok) return;
		} catch {
			// not listening yet
		}
		await new Promise((r) => setTimeout(r, 200));
	}
	throw new Error(`${url} did not answer within ${seconds}s:\n${tail(child.logFile)}`);
}

async function json(url, init) {
	const res = await fetch(url, init);
	const text = await res.text();
	assert.ok(res.ok, `${init?.method ?? 'GET'} ${url} -> ${res.status}: ${text}`);
	return text ? JSON.parse(text) : null;
}

const control = () => ({ 'X-Sandbox-Control': stack.sandbox_control });
const sandbox = {
	state: () => json(`${sandboxUrl}/_sandbox/state`, { headers: control() }),
	fault: (fault) =>
		json(`${sandboxUrl}/_sandbox/faults`, {
			method: 'POST',
			headers: { 'Content-Type': 'application/json', ...control() },
			body: JSON.stringify(fault),
		}),
};

/** A relay token made with the admin API of the dev stack; returns {id, token}. */
async function createToken(spec) {
	return await json(`${relayUrl}/v1/admin/tokens`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${stack.admin_key}` },
		body: JSON.stringify(spec),
	});
}

async function revokeToken(id) {
	await json(`${relayUrl}/v1/admin/tokens/${id}/revoke`, {
		method: 'POST',
		headers: { Authorization: `Bearer ${stack.admin_key}` },
	});
}

/** Start `paywalls-relay dev-stack --json` and read its one JSON line. */
async function startDevStack(bin) {
	const log = path.join(tmp, 'dev-stack.log');
	const fd = fs.openSync(log, 'a');
	const child = spawn(bin, ['dev-stack', '--json', '--exit-with-stdin'], {
		cwd: tmp,
		// The relay does not retry upstream failures itself here, so an injected fault reaches
		// n8n and its Retry On Fail.
		env: { ...process.env, RELAY_UPSTREAM_RETRIES: '0', RELAY_UPSTREAM_BUDGET: '5', RELAY_LOG_LEVEL: 'WARNING' },
		stdio: ['pipe', 'pipe', fd],
	});
	fs.closeSync(fd);
	child.logFile = log;
	child.exited = null;
	child.on('exit', (code, signal) => {
		child.exited = { code, signal };
	});
	children.push(child);
	return devStackInfo(child, log);
}

/** Run an n8n CLI command; returns { status, out } (stdout and stderr together). */
function n8nCli(args, timeoutSeconds = 240, env = n8n.env) {
	const started = Date.now();
	const res = spawnSync(n8n.node, [n8n.bin, ...args], {
		env,
		cwd: tmp,
		encoding: 'utf8',
		timeout: timeoutSeconds * 1000,
		maxBuffer: 64 * 1024 * 1024,
	});
	const seconds = (Date.now() - started) / 1000;
	(timings.n8nCommands ??= []).push(`${args[0]} ${seconds.toFixed(1)}s`);
	if (res.error) throw res.error;
	return { status: res.status, out: `${res.stdout}\n${res.stderr}`, stdout: res.stdout };
}

/** `n8n execute --id --rawOutput`; returns the status, text and the run data by node name. */
function execute(workflowId, env = n8n.env) {
	const res = n8nCli(['execute', `--id=${workflowId}`, '--rawOutput'], 600, env);
	let data = null;
	const begin = res.stdout.search(/^\{$/m);
	const end = res.stdout.lastIndexOf('\n}');
	if (begin >= 0 && end > begin) {
		try {
			data = JSON.parse(res.stdout.slice(begin, end + 2));
		} catch {
			data = null;
		}
	}
	return { ...res, data };
}

/** The items a node put out in its last run of an execution. */
function outputOf(result, nodeName) {
	const runs = result.data?.data?.resultData?.runData?.[nodeName];
	assert.ok(runs && runs.length, `no run of "${nodeName}" in:\n${result.out.slice(-3000)}`);
	const last = runs[runs.length - 1];
	assert.ok(!last.error, `"${nodeName}" failed: ${JSON.stringify(last.error)}`);
	return last.data.main[0].map((item) => item.json);
}

function creditsFor(state, users) {
	return state.deposits.filter((d) => users.includes(d.user));
}

// --- workflows -------------------------------------------------------------------------------

function itemsNode(items) {
	return {
		id: 'items',
		name: 'Items',
		type: 'n8n-nodes-base.code',
		typeVersion: 2,
		position: [200, 0],
		parameters: { jsCode: `return ${JSON.stringify(items.map((json) => ({ json })))};` },
	};
}

function relayNode(name, x, parameters, settings = {}, cred = CRED) {
	return {
		id: name.toLowerCase().replace(/\W+/g, '-'),
		name,
		type: NODE_TYPE,
		typeVersion: 2,
		position: [x, 0],
		credentials: { paywallsRelayApi: cred },
		parameters,
		...settings,
	};
}

/** Manual Trigger -> Items -> nodes..., chained in order. */
function workflow(id, name, nodes) {
	const all = [
		{ id: 'start', name: 'Start', type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} },
		...nodes,
	];
	const connections = {};
	for (let i = 0; i < all.length - 1; i++) {
		connections[all[i].name] = { main: [[{ node: all[i + 1].name, type: 'main', index: 0 }]] };
	}
	return { id, name, active: false, nodes: all, connections, settings: { executionOrder: 'v1' } };
}

function depositParams(extra = {}) {
	return {
		resource: 'deposit',
		operation: 'create',
		user: '={{ $json.user }}',
		amount: '={{ $json.amount }}',
		reason: 'e2e_test',
		reference: '={{ $json.reference }}',
		...extra,
	};
}

const getBalance = () =>
	relayNode('Balance', 600, { resource: 'balance', operation: 'get', user: '={{ $json.user }}' });

const RETRY = { retryOnFail: true, maxTries: 3, waitBetweenTries: 1000 };
const REDIRECT_ITEM = { user: 'e2e:redirected', amount: '2', reference: 'redir_1' };

// The README's first workflow (examples/first-workflow.json) is the main workflow tested here.
const EXAMPLE = JSON.parse(fs.readFileSync(path.join(PKG, 'examples', 'first-workflow.json'), 'utf8'));
const exampleNode = (name) => EXAMPLE.nodes.find((n) => n.name === name);
const MAIN_ITEMS = JSON.parse(
	exampleNode('Sample Events').parameters.jsCode.replace(/^return\s*/, '').replace(/;\s*$/, ''),
).map((item) => item.json);
const MAIN_REASON = exampleNode('Deposit Credits').parameters.reason;
const RETRY_503_ITEMS = [
	{ user: 'e2e:dan', amount: '3', reference: 'inv_4' },
	{ user: 'e2e:eve', amount: '4', reference: 'inv_5' },
	{ user: 'e2e:fay', amount: '5', reference: 'inv_6' },
];
const RETRY_DROP_ITEMS = [
	{ user: 'e2e:gus', amount: '6', reference: 'inv_7' },
	{ user: 'e2e:hal', amount: '1.25', reference: 'inv_8' },
	{ user: 'e2e:ivy', amount: '8', reference: 'inv_9' },
];
const ERROR_ITEMS = [
	{ user: 'e2e:jon', amount: '1', reference: 'err_1' },
	{ user: 'e2e:jon', amount: '10', reference: 'err_2' },
	{ user: 'bad user', amount: '1', reference: 'err_3' },
];

const WORKFLOWS = {
	main: {
		...EXAMPLE,
		id: 'pwrE2eWfMain001',
		nodes: EXAMPLE.nodes.map((n) => (n.credentials ? { ...n, credentials: { paywallsRelayApi: CRED } } : n)),
	},
	retry503: workflow('pwrE2eWfRetry01', 'e2e: Retry On Fail after an upstream 503', [
		itemsNode(RETRY_503_ITEMS),
		relayNode('Deposit', 400, depositParams(), RETRY),
		getBalance(),
	]),
	retryDrop: workflow('pwrE2eWfRetry02', 'e2e: Retry On Fail after a lost answer', [
		itemsNode(RETRY_DROP_ITEMS),
		relayNode('Deposit', 400, depositParams(), RETRY),
		getBalance(),
	]),
	errors: workflow('pwrE2eWfError01', 'e2e: errors as item data', [
		itemsNode(ERROR_ITEMS),
		relayNode('Deposit', 400, depositParams(), { onError: 'continueRegularOutput' }, LIMITED_CRED),
	]),
	fails: workflow('pwrE2eWfError02', 'e2e: a refused item stops the workflow', [
		itemsNode([ERROR_ITEMS[2]]),
		relayNode('Deposit', 400, depositParams(), {}, LIMITED_CRED),
	]),
	redirected: workflow('pwrE2eWfRedir01', 'e2e: a redirecting Base URL fails, nothing credited', [
		itemsNode([REDIRECT_ITEM]),
		relayNode('Deposit', 400, depositParams(), {}, REDIRECT_CRED),
	]),
	chargeAndList: workflow('pwrE2eWfCharge1', 'e2e: charge, then list deposits', [
		itemsNode([
			{ user: 'acme:alice', amount: '1', reference: 'job_1' },
			{ user: 'e2e:nobody', amount: '1', reference: 'job_2' },
		]),
		relayNode('Charge', 400, {
			resource: 'charge',
			operation: 'create',
			user: '={{ $json.user }}',
			amount: '={{ $json.amount }}',
			reason: 'e2e_charge',
			reference: '={{ $json.reference }}',
		}),
		relayNode('List All', 600, { resource: 'deposit', operation: 'getAll', returnAll: true }, { executeOnce: true }),
		relayNode('List Two', 800, { resource: 'deposit', operation: 'getAll', returnAll: false, limit: 2 }, { executeOnce: true }),
		relayNode(
			'List Alice',
			1000,
			{ resource: 'deposit', operation: 'getAll', returnAll: true, filters: { user: 'acme:alice' } },
			{ executeOnce: true },
		),
	]),
};


// --- the parity leg: every case of schemas/parity-cases.json in this n8n ---------------------

const PARITY = JSON.parse(fs.readFileSync(path.join(REPO, 'schemas', 'parity-cases.json'), 'utf8'));
const PARITY_WF_ID = 'pwrE2eWfParity1';
const CUSTOM_WF_ID = 'pwrE2eWfCustom1';

/**
 * The node's parameters for a case's inputs, each an expression as when mapped from a trigger:
 * a blank or missing field reaches the node as what the mapping gave ("", a number, undefined)
 * instead of stopping the workflow as an unset required parameter would.
 */
const mapped = (value) => `={{ ${value === undefined || value === null ? 'undefined' : JSON.stringify(value)} }}`;

function parityParams(op, inputs) {
	const params = { resource: op === 'deposit' ? 'deposit' : 'charge', operation: 'create' };
	for (const name of ['user', 'amount', 'reference']) params[name] = mapped(inputs[name]);
	const options = {};
	for (const [name, value] of Object.entries(inputs)) {
		if (value === undefined || value === null || ['user', 'amount', 'reference'].includes(name)) continue;
		if (name === 'extra_metadata') {
			const rows = Array.isArray(value) ? value : Object.entries(value).map(([key, v]) => ({ key, value: v }));
			params.extraMetadata = { pairs: rows.map((row) => ({ key: mapped(row.key), value: mapped(row.value) })) };
		} else if (name === 'dedupe_on') options.dedupeOn = mapped(value);
		else if (name === 'custom_dedupe_fields') options.customDedupeFields = mapped(value);
		else if (name === 'dry_run') options.dryRun = mapped(value);
		else params[name] = mapped(value);
	}
	params.options = options;
	return params;
}

/** An HTTP Request node calling the sandbox's control endpoints (reset, balances, faults, state). */
function sandboxNode(name, method, urlPath, body) {
	const parameters = {
		method,
		url: `${sandboxUrl}${urlPath}`,
		sendHeaders: true,
		headerParameters: { parameters: [{ name: 'X-Sandbox-Control', value: stack.sandbox_control }] },
		options: {},
	};
	if (body !== undefined) {
		Object.assign(parameters, { sendBody: true, specifyBody: 'json', jsonBody: JSON.stringify(body) });
	}
	// Continue On Fail: a failed sandbox call shows in its node's output instead of ending the run.
	return { name, type: 'n8n-nodes-base.httpRequest', typeVersion: 4.2, parameters, onError: 'continueRegularOutput' };
}

/**
 * One workflow that runs every case in turn, as the protocol says: reset the sandbox, set it
 * up, make the earlier calls through the node, snapshot the sandbox, run the case's step
 * (Continue On Fail, so a refusal is an item), read the sandbox again.
 */
/** Whether n8n can hold the case's inputs: Extra Metadata is rows (or nothing) in n8n. */
const expressibleInN8n = (c) =>
	c.inputs.extra_metadata === undefined || c.inputs.extra_metadata === null || typeof c.inputs.extra_metadata === 'object';

function parityWorkflow(credentialOf) {
	const chain = [];
	PARITY.cases.forEach((c, i) => {
		if (!expressibleInN8n(c)) return;
		const cred = credentialOf(i);
		chain.push(sandboxNode(`P${i} reset`, 'POST', '/_sandbox/reset'));
		for (const [user, balance] of Object.entries(c.setup?.balances ?? {})) {
			chain.push(sandboxNode(`P${i} balance ${user}`, 'PUT', `/_sandbox/balances/${encodeURIComponent(user)}`, { balance }));
		}
		(c.setup?.faults ?? []).forEach((fault, j) => chain.push(sandboxNode(`P${i} fault ${j}`, 'POST', '/_sandbox/faults', fault)));
		(c.before ?? []).forEach((call, j) =>
			chain.push({ ...relayNode(`P${i} before ${j}`, 0, parityParams(call.op, call.inputs), { onError: 'continueRegularOutput' }, cred) }),
		);
		chain.push(sandboxNode(`P${i} snapshot`, 'GET', '/_sandbox/state'));
		chain.push(relayNode(`P${i} step`, 0, parityParams(c.op, c.inputs), { onError: 'continueRegularOutput' }, cred));
		chain.push(sandboxNode(`P${i} after`, 'GET', '/_sandbox/state'));
	});
	chain.forEach((node, k) => {
		node.id = `p-${k}`;
		node.position = [200 * (k + 1), 0];
		// Each node runs once, whatever the item count before it.
		node.executeOnce = true;
	});
	return workflow(PARITY_WF_ID, 'e2e: parity cases', chain);
}

// --- setup -----------------------------------------------------------------------------------

before(async () => {
	const t0 = Date.now();
	assert.ok(
		fs.existsSync(path.join(PKG, 'dist/nodes/PaywallsRelay/PaywallsRelay.node.js')),
		'dist/ is missing: run "npm run build" first',
	);

	// 1. n8n 2.41.1 and Node 24, from the cache (installed on first use).
	const install = spawnSync('bash', [path.join(HERE, 'install-n8n.sh')], {
		stdio: ['ignore', 'pipe', 'inherit'],
		encoding: 'utf8',
	});
	assert.equal(install.status, 0, 'install-n8n.sh failed');
	const cache = install.stdout.trim().split('\n').pop();
	timings.n8nInstall = `${((Date.now() - t0) / 1000).toFixed(1)}s`;

	tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pwr-n8n-e2e-'));
	const brokerPort = await freePort();

	// 2. The relay and its sandbox upstream: the one harness every suite uses.
	stack = await startDevStack(relayBin());
	sandboxUrl = stack.sandbox_url;
	relayUrl = stack.relay_url;
	const token = (await createToken({ label: 'n8n test', operations: ['deposit', 'charge', 'balance', 'ledger'], feed: 'all' })).token;
	const limited = (await createToken({ label: 'n8n limited', operations: ['deposit'], max_amount: '5' })).token;
	tokens.main = token;

	// The redirecting "wrong Base URL" in front of it: its own process (execute() blocks this
	// one while n8n runs), logging each request it answers.
	const redirectPort = await freePort();
	const redirectProc = start('redirector', process.execPath, ['-e', REDIRECTOR, String(redirectPort), relayUrl], { cwd: tmp });
	redirector = { url: `http://127.0.0.1:${redirectPort}`, log: redirectProc.logFile };
	await waitForHttp(`${redirector.url}/healthz`, redirectProc);

	// 3. The package as a user installs it: npm pack, then npm install in ~/.n8n/nodes.
	const home = path.join(tmp, 'n8n-home');
	const nodesDir = path.join(home, '.n8n', 'nodes');
	fs.mkdirSync(nodesDir, { recursive: true });
	const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', tmp], { cwd: PKG, encoding: 'utf8' }).trim().split('\n').pop();
	execFileSync(
		'npm',
		['install', '--ignore-scripts', '--legacy-peer-deps', '--no-audit', '--no-fund', '--offline', path.join(tmp, packed)],
		{ cwd: nodesDir, stdio: ['ignore', 'ignore', 'inherit'] },
	);

	n8n = {
		node: path.join(cache, 'node', 'bin', 'node'),
		bin: path.join(cache, 'app', 'node_modules', 'n8n', 'bin', 'n8n'),
		env: {
			PATH: `${path.join(cache, 'node', 'bin')}:${process.env.PATH}`,
			HOME: home,
			TMPDIR: tmp,
			N8N_USER_FOLDER: home,
			N8N_ENCRYPTION_KEY: 'paywalls-relay-e2e-only',
			N8N_RUNNERS_BROKER_PORT: String(brokerPort),
			N8N_DIAGNOSTICS_ENABLED: 'false',
			N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
			N8N_TEMPLATES_ENABLED: 'false',
			N8N_PERSONALIZATION_ENABLED: 'false',
			N8N_LOG_LEVEL: 'info',
			N8N_LOG_OUTPUT: 'console',
		},
	};

	// The second install method: the unpacked package in a folder named by N8N_CUSTOM_EXTENSIONS,
	// with n8n's own n8n-workflow resolvable from it (as in a Docker image's custom folder).
	const customDir = path.join(tmp, 'custom-extensions');
	fs.mkdirSync(path.join(customDir, 'node_modules'), { recursive: true });
	execFileSync('tar', ['xzf', path.join(tmp, packed), '-C', customDir]);
	fs.symlinkSync(path.join(cache, 'app', 'node_modules', 'n8n-workflow'), path.join(customDir, 'node_modules', 'n8n-workflow'));
	const customHome = path.join(tmp, 'n8n-custom-home');
	fs.mkdirSync(customHome);
	n8nCustomEnv = {
		...n8n.env,
		HOME: customHome,
		N8N_USER_FOLDER: customHome,
		N8N_CUSTOM_EXTENSIONS: path.join(customDir, 'package'),
		N8N_RUNNERS_BROKER_PORT: String(await freePort()),
	};

	// 4. Credentials and workflows. Each parity case gets its own token (its limits, its caps).
	const parityCreds = [];
	for (const [i, c] of PARITY.cases.entries()) {
		const made = await createToken({ ...c.token, label: `${c.token.label} #${i}`.slice(0, 100) });
		if (c.token_revoked) await revokeToken(made.id);
		parityCreds.push({ id: `pwrE2eParity${String(i).padStart(3, '0')}`, name: `Parity ${i}`, type: 'paywallsRelayApi', data: { baseUrl: relayUrl, token: made.token } });
	}
	WORKFLOWS.parity = parityWorkflow((i) => ({ id: parityCreds[i].id, name: parityCreds[i].name }));
	const creds = [
		...parityCreds,
		{ ...CRED, type: 'paywallsRelayApi', data: { baseUrl: relayUrl, token } },
		{ ...LIMITED_CRED, type: 'paywallsRelayApi', data: { baseUrl: relayUrl, token: limited } },
		{ ...REDIRECT_CRED, type: 'paywallsRelayApi', data: { baseUrl: redirector.url, token } },
	];
	fs.writeFileSync(path.join(tmp, 'credentials.json'), JSON.stringify(creds));
	const wfDir = path.join(tmp, 'workflows');
	fs.mkdirSync(wfDir);
	for (const [name, wf] of Object.entries(WORKFLOWS)) {
		fs.writeFileSync(path.join(wfDir, `${name}.json`), JSON.stringify(wf));
	}
	let res = n8nCli(['import:credentials', `--input=${path.join(tmp, 'credentials.json')}`]);
	assert.equal(res.status, 0, `import:credentials failed:\n${res.out}`);
	res = n8nCli(['import:workflow', '--separate', `--input=${wfDir}`]);
	assert.equal(res.status, 0, `import:workflow failed:\n${res.out}`);

	// The other n8n: the example made for N8N_CUSTOM_EXTENSIONS, imported as a user would.
	const customExample = JSON.parse(fs.readFileSync(path.join(PKG, 'examples', 'first-workflow.custom-extensions.json'), 'utf8'));
	const customWf = {
		...customExample,
		id: CUSTOM_WF_ID,
		nodes: customExample.nodes.map((n) => (n.credentials ? { ...n, credentials: { paywallsRelayApi: CRED } } : n)),
	};
	fs.writeFileSync(path.join(tmp, 'custom-credentials.json'), JSON.stringify([creds.find((c) => c.id === CRED.id)]));
	fs.writeFileSync(path.join(tmp, 'custom-workflow.json'), JSON.stringify(customWf));
	res = n8nCli(['import:credentials', `--input=${path.join(tmp, 'custom-credentials.json')}`], 240, n8nCustomEnv);
	assert.equal(res.status, 0, `import:credentials (custom extensions) failed:\n${res.out}`);
	res = n8nCli(['import:workflow', `--input=${path.join(tmp, 'custom-workflow.json')}`], 240, n8nCustomEnv);
	assert.equal(res.status, 0, `import:workflow (custom extensions) failed:\n${res.out}`);
	timings.setup = `${((Date.now() - t0) / 1000).toFixed(1)}s`;
}, { timeout: 45 * 60 * 1000 });

after(async () => {
	for (const child of children) {
		if (!child.exited) child.kill('SIGTERM');
	}
	if (tmp && !process.env.KEEP_E2E_TMP) fs.rmSync(tmp, { recursive: true, force: true });
	else if (tmp) console.log(`e2e files kept in ${tmp}`);
	console.log(`e2e timings: ${JSON.stringify(timings)}`);
});

// --- the tests -------------------------------------------------------------------------------

const users = (items) => items.map((i) => i.user);

test('deposits for three items credit each user once, then the balances are read back', async () => {
	const result = execute(WORKFLOWS.main.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);

	const state = await sandbox.state();
	const credits = creditsFor(state, users(MAIN_ITEMS));
	assert.equal(credits.length, 3, JSON.stringify(state.deposits));
	for (const item of MAIN_ITEMS) {
		const [credit] = credits.filter((c) => c.user === item.user);
		assert.equal(Number(credit.amount), Number(item.amount));
		assert.deepEqual(credit.metadata, { reason: MAIN_REASON, reference: item.reference });
		assert.equal(Number(state.balances[item.user]), Number(item.amount));
	}

	const deposits = outputOf(result, 'Deposit Credits');
	assert.equal(deposits.length, 3);
	for (const [i, item] of MAIN_ITEMS.entries()) {
		const body = { user: item.user, amount: item.amount, metadata: { reason: MAIN_REASON, reference: item.reference } };
		assert.equal(deposits[i].user, item.user);
		assert.equal(deposits[i].idempotency_key, deriveIdempotencyKey('deposit', body), 'the relay echoes the key the node derived');
		assert.equal(deposits[i].replayed, false);
		assert.equal(Number(deposits[i].new_balance), Number(item.amount));
	}
	const balances = outputOf(result, 'Get Balance');
	assert.deepEqual(
		balances.map((b) => [b.user, Number(b.balance_formatted)]),
		MAIN_ITEMS.map((i) => [i.user, Number(i.amount)]),
	);

	// The relay's ledger holds the same keys.
	const ledger = await json(`${relayUrl}/v1/relay/deposits?limit=100`, {
		headers: { Authorization: `Bearer ${CRED_TOKEN()}` },
	});
	for (const d of deposits) {
		assert.ok(ledger.data.some((e) => e.idempotency_key === d.idempotency_key && e.user === d.user), d.user);
	}
});

test('executing the same workflow again adds no credit', async () => {
	const before = await sandbox.state();
	const result = execute(WORKFLOWS.main.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);
	const state = await sandbox.state();
	assert.equal(creditsFor(state, users(MAIN_ITEMS)).length, 3);
	assert.deepEqual(state.balances, before.balances);
	assert.equal(state.calls.deposit, before.calls.deposit, 'nothing was sent upstream');
	const deposits = outputOf(result, 'Deposit Credits');
	assert.deepEqual(deposits.map((d) => d.replayed), [true, true, true]);
});

test('Retry On Fail after an injected upstream 503 still credits each item once', async () => {
	const before = await sandbox.state();
	await sandbox.fault({ kind: 'status', status: 503, count: 1, endpoint: 'deposit' });
	const result = execute(WORKFLOWS.retry503.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);

	const state = await sandbox.state();
	assert.equal(state.faults.length, 0, 'the fault fired');
	// Three credits plus the one call that failed: n8n's retry re-sent the item that failed.
	assert.equal(state.calls.deposit - (before.calls.deposit ?? 0), 4);
	const credits = creditsFor(state, users(RETRY_503_ITEMS));
	assert.equal(credits.length, 3, JSON.stringify(credits));
	for (const item of RETRY_503_ITEMS) {
		assert.equal(Number(state.balances[item.user]), Number(item.amount), item.user);
	}
	// n8n re-ran the whole node with every item; the node sends them in order, so the failed
	// first call had credited nothing and every item is credited now, once.
	const deposits = outputOf(result, 'Deposit');
	assert.deepEqual(deposits.map((d) => d.user), users(RETRY_503_ITEMS));
	assert.ok(deposits.every((d) => d.error === undefined && typeof d.new_balance === 'string'), JSON.stringify(deposits));
});

test('Retry On Fail after a credit whose answer was lost still credits each item once', async () => {
	const before = await sandbox.state();
	await sandbox.fault({ kind: 'drop_after_credit', count: 1, endpoint: 'deposit' });
	const result = execute(WORKFLOWS.retryDrop.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);

	const state = await sandbox.state();
	assert.equal(state.faults.length, 0, 'the fault fired');
	assert.equal(state.calls.deposit - (before.calls.deposit ?? 0), 4);
	const credits = creditsFor(state, users(RETRY_DROP_ITEMS));
	assert.equal(credits.length, 3, JSON.stringify(credits));
	for (const item of RETRY_DROP_ITEMS) {
		assert.equal(Number(state.balances[item.user]), Number(item.amount), item.user);
	}
	const balances = outputOf(result, 'Balance');
	assert.deepEqual(
		balances.map((b) => Number(b.balance_formatted)),
		RETRY_DROP_ITEMS.map((i) => Number(i.amount)),
	);
});

test('Continue On Fail: refusals become items that name the token limit or the field', async () => {
	const result = execute(WORKFLOWS.errors.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);
	const [ok, overLimit, badUser] = outputOf(result, 'Deposit');
	assert.equal(Number(ok.new_balance), 1);
	assert.match(overLimit.error, /per-call maximum of 5/);
	// Error items keep what they were about.
	assert.equal(overLimit.user, 'e2e:jon');
	assert.equal(overLimit.amount, '10');
	assert.equal(badUser.user, 'bad user');
	assert.equal(badUser.amount, '1');
	assert.equal(overLimit.details.status, 403);
	assert.equal(overLimit.details.limit, 'max_amount');
	assert.match(badUser.error, /refused a field of this node.* User: /);
	assert.equal(badUser.details.status, 422);
	assert.equal(badUser.details.errors[0].field, 'user');
	const state = await sandbox.state();
	assert.equal(Number(state.balances['e2e:jon']), 1, 'only the allowed deposit was credited');
});

test('without Continue On Fail a refused item fails the execution with the field named', async () => {
	const result = execute(WORKFLOWS.fails.id);
	assert.notEqual(result.status, 0, 'the execution must fail');
	assert.match(result.out, /refused a field of this node.* User: /);
});

test('a Base URL that redirects fails the execution with the redirect named; the redirect is not followed', async () => {
	const before = await sandbox.state();
	const result = execute(WORKFLOWS.redirected.id);
	assert.notEqual(result.status, 0, 'the execution must fail');
	assert.match(
		result.out,
		new RegExp(`redirects: ${redirector.url.replace(/[.]/g, '\\.')} answered HTTP 307 and points to ${relayUrl.replace(/[.]/g, '\\.')}/v1/user/balance/deposit\\.`),
		result.out.slice(-4000),
	);
	const posts = fs.readFileSync(redirector.log, 'utf8').split('\n').filter((line) => line.startsWith('POST '));
	assert.deepEqual(posts, ['POST /v1/user/balance/deposit']);
	const state = await sandbox.state();
	assert.equal(creditsFor(state, [REDIRECT_ITEM.user]).length, 0, 'nothing credited through the redirect');
	assert.equal(state.calls.deposit ?? 0, before.calls.deposit ?? 0, 'nothing reached Paywalls');
});

test('charge: success false is data; list deposits: limit, return all and the user filter', async () => {
	const result = execute(WORKFLOWS.chargeAndList.id);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);
	const [paid, refused] = outputOf(result, 'Charge');
	assert.equal(paid.success, true);
	assert.equal(paid.user, 'acme:alice');
	assert.match(paid.idempotency_key, /^pwk1_/);
	assert.equal(refused.success, false);
	assert.equal(typeof refused.message, 'string');
	const state = await sandbox.state();
	assert.equal(Number(state.balances['acme:alice']), 9);
	assert.equal(state.charges.length, 1);

	const ledger = await json(`${relayUrl}/v1/relay/deposits?limit=100`, {
		headers: { Authorization: `Bearer ${CRED_TOKEN()}` },
	});
	const all = outputOf(result, 'List All');
	assert.ok(all.length >= 10, `${all.length} deposits listed`);
	assert.deepEqual(all.map((d) => d.id), ledger.data.map((d) => d.id));
	const two = outputOf(result, 'List Two');
	assert.deepEqual(two.map((d) => d.id), ledger.data.slice(0, 2).map((d) => d.id));
	const alice = outputOf(result, 'List Alice');
	assert.deepEqual(alice.map((d) => d.user), ['acme:alice']);
});

test('the example made for N8N_CUSTOM_EXTENSIONS imports and runs in an n8n that loads the node that way', async () => {
	const before = await sandbox.state();
	const result = execute(CUSTOM_WF_ID, n8nCustomEnv);
	assert.equal(result.status, 0, `execute failed:\n${result.out.slice(-4000)}`);
	const deposits = outputOf(result, 'Deposit Credits');
	assert.equal(deposits.length, MAIN_ITEMS.length);
	for (const [i, item] of MAIN_ITEMS.entries()) {
		const body = { user: item.user, amount: item.amount, metadata: { reason: MAIN_REASON, reference: item.reference } };
		assert.equal(deposits[i].idempotency_key, deriveIdempotencyKey('deposit', body));
		// The same relay and the same fields as the package-installed run: a replay, not a credit.
		assert.equal(deposits[i].replayed, true);
	}
	const state = await sandbox.state();
	assert.deepEqual(state.balances, before.balances);
});

test('parity: every case of schemas/parity-cases.json through the node in real n8n', async (t) => {
	const result = execute(PARITY_WF_ID);
	assert.ok(result.data, `no run data:\n${result.out.slice(-4000)}`);
	const runData = result.data.data.resultData.runData;
	const firstItem = (name) => {
		const runs = runData[name];
		assert.ok(runs && runs.length, `no run of "${name}"`);
		const last = runs[runs.length - 1];
		assert.ok(!last.error, `"${name}" failed: ${JSON.stringify(last.error)}`);
		return last.data.main[0][0].json;
	};
	const money = (state) => ({ balances: state.balances, deposits: state.deposits, charges: state.charges });
	for (const [i, c] of PARITY.cases.entries()) {
		if (!expressibleInN8n(c)) {
			// n8n stores Extra Metadata as rows and replaces anything else in a workflow with its
			// default before the node runs, so no workflow can give the node text there: the
			// node's own refusal of it is tested in test/parity.test.js.
			await t.test(`${c.name} (Extra Metadata that is not rows cannot exist in n8n)`, () => {
				assert.notEqual(typeof c.inputs.extra_metadata, 'object');
				assert.equal(runData[`P${i} step`], undefined, 'not run here');
			});
			continue;
		}
		await t.test(c.name, () => {
			const e = c.expect;
			const out = firstItem(`P${i} step`);
			if (e.client_error) {
				assert.equal(out.error, e.message);
				assert.equal(out.details.problem, e.client_error);
			} else if (e.problem) {
				assert.ok(out.error, `expected ${e.problem}, got ${JSON.stringify(out)}`);
				assert.equal(out.details.problem, e.problem, out.error);
				assert.equal(out.details.status, e.status);
				if (e.limit) assert.equal(out.details.limit, e.limit);
				if (e.reason) assert.equal(out.details.reason, e.reason);
				if (e.error_fields) {
					assert.deepEqual(out.details.errors.map((x) => x.field).sort(), [...e.error_fields].sort());
				}
				assert.equal(out.details.idempotency_key ?? null, e.key, 'the key the node sent');
				assert.equal(out.user, c.inputs.user ?? null, 'the error item keeps user');
			} else {
				assert.equal(out.error, undefined, out.error);
				assert.equal(out.idempotency_key, e.key);
			}
			for (const [k, v] of Object.entries(e.output ?? {})) assert.deepEqual(out[k], v, `output ${k}`);
			if (e.sandbox_unchanged) {
				assert.deepEqual(money(firstItem(`P${i} after`)), money(firstItem(`P${i} snapshot`)), 'the sandbox moved');
			}
		});
	}
});

function CRED_TOKEN() {
	return tokens.main;
}
