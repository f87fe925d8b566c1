// End-to-end test of PaywallsRelayTrigger in a real n8n 2.41.1 (`n8n start`, not `n8n execute`:
// a trigger only runs in an active, published workflow). The packed node is installed as a user
// installs it (npm install in ~/.n8n/nodes); a workflow "Paywalls Relay Trigger (Deposit Created)
// -> HTTP Request to a receiver started here" is imported and published; when n8n starts it
// activates the workflow, and the trigger registers n8n's webhook URL with the relay of
// `paywalls-relay dev-stack --json` (POST /v1/relay/hooks). A deposit into the sandbox stack
// then makes a deposit event (the relay's own, or the sandbox's signed webhook when dev-stack
// wires one), the relay POSTs it to n8n, the workflow executes, and its HTTP Request node brings
// the item to the receiver.
//
// Needs: the built package (npm run build), the relay's virtualenv (make venv, or
// PAYWALLS_RELAY_BIN), and install-n8n.sh's cache (installed on first use, reused after).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { devStackInfo, freePort, relayBin, tail } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PKG = path.resolve(HERE, '..');
const REPO = path.resolve(PKG, '..');
const TRIGGER_TYPE = 'n8n-nodes-paywalls-relay.paywallsRelayTrigger';
const CRED = { id: 'pwrE2eTrigCred01', name: 'Relay e2e (events)' };
const WF_ID = 'pwrE2eWfTrigger1';
const WEBHOOK_ID = crypto.randomUUID();
const USER = 'e2e:n8n_trigger';
const OTHER_USER = 'e2e:n8n_someone_else';

const children = [];
let tmp;
let stack;
let token;
let n8n; // { node, bin, env, url, proc }
let receiver; // { server, url, received }

/** `paywalls-relay dev-stack --json`; resolves with its one JSON line. */
async function startDevStack() {
	const log = path.join(tmp, 'dev-stack.log');
	const fd = fs.openSync(log, 'a');
	const child = spawn(relayBin(), ['dev-stack', '--json', '--exit-with-stdin'], {
		cwd: tmp,
		env: { ...process.env, RELAY_LOG_LEVEL: 'WARNING' },
		stdio: ['pipe', 'pipe', fd],
	});
	fs.closeSync(fd);
	children.push(child);
	return devStackInfo(child, log);
}

async function json(url, init) {
	const res = await fetch(url, init);
	const text = await res.text();
	assert.ok(res.ok, `${init?.method ?? 'GET'} ${url} -> ${res.status}: ${text}`);
	return text ? JSON.parse(text) : null;
}

const relay = (pathname, init = {}) =>
	json(`${stack.relay_url}${pathname}`, {
		...init,
		headers: { Authorization: `Bearer ${token.token}`, 'Content-Type': 'application/json', ...(init.headers ?? {}) },
	});

async function until(what, probe, seconds = 60) {
	const deadline = Date.now() + seconds * 1000;
	for (;;) {
		const value = await probe();
		if (value) return value;
		if (Date.now() > deadline) {
			throw new Error(`${what} did not happen within ${seconds} s.\n--- n8n log ---\n${tail(n8n.log)}\n--- dev-stack log ---\n${tail(path.join(tmp, 'dev-stack.log'))}`);
		}
		if (n8n.proc.exitCode !== null) throw new Error(`n8n exited ${n8n.proc.exitCode}:\n${tail(n8n.log)}`);
		await new Promise((r) => setTimeout(r, 250));
	}
}

function n8nCli(args) {
	const res = spawnSync(n8n.node, [n8n.bin, ...args], { env: n8n.env, cwd: tmp, encoding: 'utf8', timeout: 240_000 });
	if (res.error) throw res.error;
	return { status: res.status, out: `${res.stdout}\n${res.stderr}` };
}

/**
 * A receiver for the workflows' HTTP Request nodes: records each request {method, path, body};
 * GET /users/<id> answers an email address for that user (the example's user directory).
 */
function startReceiver() {
	const received = [];
	const server = http.createServer((req, res) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => {
			const text = Buffer.concat(chunks).toString('utf8');
			let body = null;
			try {
				body = text ? JSON.parse(text) : null;
			} catch {
				body = { unparsable: text };
			}
			const pathname = req.url.split('?')[0];
			received.push({ method: req.method, path: pathname, body });
			res.writeHead(200, { 'Content-Type': 'application/json' });
			if (req.method === 'GET' && pathname.startsWith('/users/')) {
				const user = decodeURIComponent(pathname.slice('/users/'.length));
				res.end(JSON.stringify({ email: `${user.replace(/[^A-Za-z0-9]/g, '_')}@example.test` }));
			} else {
				res.end('{}');
			}
		});
	});
	return new Promise((resolve) => {
		server.listen(0, '127.0.0.1', () => {
			const base = `http://127.0.0.1:${server.address().port}`;
			resolve({ server, received, base, url: `${base}/got`, at: (p) => received.filter((r) => r.path === p) });
		});
	});
}

function triggerWorkflow(receiverUrl) {
	return {
		id: WF_ID,
		name: 'e2e: Paywalls Relay Trigger -> receiver',
		active: false,
		nodes: [
			{
				id: 'trigger',
				name: 'Deposit Created',
				type: TRIGGER_TYPE,
				typeVersion: 1,
				position: [0, 0],
				webhookId: WEBHOOK_ID,
				credentials: { paywallsRelayApi: CRED },
				parameters: { event: 'depositCreated', user: USER },
			},
			{
				id: 'send',
				name: 'Send',
				type: 'n8n-nodes-base.httpRequest',
				typeVersion: 4.2,
				position: [300, 0],
				parameters: {
					method: 'POST',
					url: receiverUrl,
					sendBody: true,
					specifyBody: 'json',
					jsonBody: '={{ JSON.stringify($json) }}',
					options: {},
				},
			},
		],
		connections: { 'Deposit Created': { main: [[{ node: 'Send', type: 'main', index: 0 }]] } },
		settings: { executionOrder: 'v1' },
	};
}

// The README's worked flow (examples/balance-depleted-topup.json) as written, but for its two
// outside services: the user directory and the email, both the receiver here.
const EXAMPLE = JSON.parse(fs.readFileSync(path.join(PKG, 'examples', 'balance-depleted-topup.json'), 'utf8'));
const DEPLETED_WF_ID = 'pwrE2eWfTrigger2';
const DEPLETED_USER = 'e2e:n8n_depleted';

/** An n8n text parameter "=...{{ x }}..." as one JavaScript expression: "..." + (x) + "...". */
const textExpression = (text) => JSON.stringify(text.slice(1)).replace(/\{\{\s*(.*?)\s*\}\}/g, '" + ($1) + "');

function depletedWorkflow() {
	const nodes = EXAMPLE.nodes.map((node) => {
		const copy = structuredClone(node);
		if (copy.credentials) copy.credentials = { paywallsRelayApi: CRED };
		if (copy.name === 'Find Email') {
			copy.parameters.url = copy.parameters.url.replace('https://app.example.com/api', receiver.base);
			assert.notEqual(copy.parameters.url, node.parameters.url, 'the example still looks users up at app.example.com');
		}
		if (copy.name === 'Send Top-up Email') {
			return {
				id: copy.id,
				name: copy.name,
				type: 'n8n-nodes-base.httpRequest',
				typeVersion: 4.2,
				position: copy.position,
				parameters: {
					method: 'POST',
					url: `${receiver.base}/mail`,
					sendBody: true,
					specifyBody: 'json',
					// The email's To and text, as the example writes them, turned into one JSON body.
					jsonBody: `={{ JSON.stringify({ to: ${node.parameters.toEmail.slice(4, -3)}, text: ${textExpression(node.parameters.text)} }) }}`,
					options: {},
				},
			};
		}
		return copy;
	});
	return { ...EXAMPLE, id: DEPLETED_WF_ID, active: false, nodes };
}

/** A deposit into the sandbox stack through the relay, as any client makes it. */
async function depositTo(user, amount, reference) {
	return await relay('/v1/user/balance/deposit', {
		method: 'POST',
		headers: { 'Idempotency-Key': `e2e-n8n-trigger-${reference}` },
		body: JSON.stringify({ user, amount, metadata: { reference } }),
	});
}

before(async () => {
	assert.ok(fs.existsSync(path.join(PKG, 'dist/nodes/PaywallsRelayTrigger/PaywallsRelayTrigger.node.js')), 'run "npm run build" first');
	const install = spawnSync('bash', [path.join(HERE, 'install-n8n.sh')], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
	assert.equal(install.status, 0, 'install-n8n.sh failed');
	const cache = install.stdout.trim().split('\n').pop();
	tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pwr-n8n-trigger-'));

	stack = await startDevStack();
	token = await json(`${stack.relay_url}/v1/admin/tokens`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${stack.admin_key}` },
		body: JSON.stringify({ label: 'n8n trigger test', operations: ['deposit', 'charge', 'events', 'topup'] }),
	});
	receiver = await startReceiver();

	// The package as a user installs it.
	const home = path.join(tmp, 'n8n-home');
	const nodesDir = path.join(home, '.n8n', 'nodes');
	fs.mkdirSync(nodesDir, { recursive: true });
	const packed = execFileSync('npm', ['pack', '--silent', '--pack-destination', tmp], { cwd: PKG, encoding: 'utf8' }).trim().split('\n').pop();
	execFileSync('npm', ['install', '--ignore-scripts', '--legacy-peer-deps', '--no-audit', '--no-fund', '--offline', path.join(tmp, packed)], {
		cwd: nodesDir,
		stdio: ['ignore', 'ignore', 'inherit'],
	});

	const port = await freePort();
	n8n = {
		node: path.join(cache, 'node', 'bin', 'node'),
		bin: path.join(cache, 'app', 'node_modules', 'n8n', 'bin', 'n8n'),
		url: `http://127.0.0.1:${port}/`,
		log: path.join(tmp, 'n8n.log'),
		env: {
			PATH: `${path.join(cache, 'node', 'bin')}:${process.env.PATH}`,
			HOME: home,
			TMPDIR: tmp,
			N8N_USER_FOLDER: home,
			N8N_ENCRYPTION_KEY: 'paywalls-relay-e2e-only',
			N8N_PORT: String(port),
			N8N_LISTEN_ADDRESS: '127.0.0.1',
			// The URL n8n gives the trigger for its webhook, which the relay then POSTs to.
			WEBHOOK_URL: `http://127.0.0.1:${port}/`,
			N8N_RUNNERS_BROKER_PORT: String(await freePort()),
			N8N_DIAGNOSTICS_ENABLED: 'false',
			N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
			N8N_TEMPLATES_ENABLED: 'false',
			N8N_PERSONALIZATION_ENABLED: 'false',
			N8N_SECURE_COOKIE: 'false',
			N8N_LOG_LEVEL: 'info',
			N8N_LOG_OUTPUT: 'console',
		},
	};

	fs.writeFileSync(
		path.join(tmp, 'credentials.json'),
		JSON.stringify([{ ...CRED, type: 'paywallsRelayApi', data: { baseUrl: stack.relay_url, token: token.token } }]),
	);
	const wfDir = path.join(tmp, 'workflows');
	fs.mkdirSync(wfDir);
	fs.writeFileSync(path.join(wfDir, 'deposit.json'), JSON.stringify(triggerWorkflow(receiver.url)));
	fs.writeFileSync(path.join(wfDir, 'depleted.json'), JSON.stringify(depletedWorkflow()));
	let res = n8nCli(['import:credentials', `--input=${path.join(tmp, 'credentials.json')}`]);
	assert.equal(res.status, 0, `import:credentials failed:\n${res.out}`);
	res = n8nCli(['import:workflow', '--separate', `--input=${wfDir}`]);
	assert.equal(res.status, 0, `import:workflow failed:\n${res.out}`);
	for (const id of [WF_ID, DEPLETED_WF_ID]) {
		res = n8nCli(['publish:workflow', `--id=${id}`]);
		assert.equal(res.status, 0, `publish:workflow ${id} failed:\n${res.out}`);
	}

	const fd = fs.openSync(n8n.log, 'a');
	n8n.proc = spawn(n8n.node, [n8n.bin, 'start'], { env: n8n.env, cwd: tmp, stdio: ['ignore', fd, fd] });
	fs.closeSync(fd);
	children.push(n8n.proc);
}, { timeout: 900_000 });

after(async () => {
	for (const child of children.reverse()) {
		if (child.exitCode !== null || child.signalCode !== null) continue;
		const exited = new Promise((r) => child.once('exit', r));
		child.stdin?.end();
		child.kill('SIGTERM');
		const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
		await exited;
		clearTimeout(timer);
	}
	receiver?.server.close();
	if (tmp && !process.env.KEEP_E2E_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

test('an active workflow with the trigger registers its webhook with the relay and runs on a deposit event', { timeout: 300_000 }, async () => {
	const target = `${n8n.url}webhook/${WEBHOOK_ID}/webhook`;
	// Activation: n8n called the trigger's checkExists and create.
	const hook = await until('the trigger subscribing on activation', async () => {
		const { data } = await relay(`/v1/relay/hooks?target_url=${encodeURIComponent(target)}`);
		return data.length ? data : null;
	}, 180);
	assert.equal(hook.length, 1, 'one hook for the workflow');
	assert.deepEqual(hook[0].event_types, ['paywall.balance.deposit.created']);
	assert.deepEqual(hook[0].filter, { user: USER });

	// Another user's deposit first: the hook's filter keeps it from the workflow.
	await depositTo(OTHER_USER, '1', 'other_1');
	const credited = await depositTo(USER, '4', 'trig_1');
	assert.equal(credited.balanceFormatted, '4.00');

	const [got] = await until('the workflow execution reaching the receiver', async () => {
		const arrived = receiver.at('/got');
		return arrived.length ? arrived : null;
	});
	const item = got.body;
	assert.equal(item.type, 'paywall.balance.deposit.created');
	assert.equal(item.user, USER);
	assert.equal(item.data.externalUserId, USER);
	assert.equal(item.data.amount, '4');
	assert.match(item.id, /^evt_/);
	// The relay's delivery log shows the one delivery, answered 2xx by n8n.
	const log = await relay(`/v1/relay/hooks/${hook[0].id}/deliveries`);
	const delivered = log.data.filter((a) => a.event_id === item.id);
	assert.ok(delivered.some((a) => a.status >= 200 && a.status < 300), JSON.stringify(log.data));
	assert.ok(receiver.at('/got').every((r) => r.body.user === USER), 'no execution for the other user');

	// The sandbox emits a deposit event by itself (Paywalls' deposits made elsewhere: Stripe, a top-up link), and
	// delivers it twice to the relay's intake: the workflow runs once for it.
	const control = { 'Content-Type': 'application/json', 'X-Sandbox-Control': stack.sandbox_control };
	const emitted = await json(`${stack.sandbox_url}/_sandbox/webhooks/emit`, {
		method: 'POST',
		headers: control,
		body: JSON.stringify({
			type: 'paywall.balance.deposit.created',
			mode: 'duplicate',
			data: { externalUserId: USER, walletUserId: 'wu_e2e', amount: '7', currency: 'USD', source: 'stripe' },
		}),
	});
	const [run] = await until('the emitted event running the workflow', async () => {
		const arrived = receiver.at('/got').filter((r) => r.body.id === emitted.id);
		return arrived.length ? arrived : null;
	});
	assert.deepEqual([run.body.type, run.body.user, run.body.data.amount, run.body.data.source], ['paywall.balance.deposit.created', USER, '7', 'stripe']);
	await until('both sandbox deliveries answered', async () => {
		const { data } = await json(`${stack.sandbox_url}/_sandbox/webhooks/deliveries`, { headers: control });
		return data.filter((d) => d.event_id === emitted.id && d.status >= 200 && d.status < 300).length >= 2;
	});
	const attempts = (await relay(`/v1/relay/hooks/${hook[0].id}/deliveries`)).data.filter((a) => a.event_id === emitted.id);
	assert.equal(attempts.length, 1, JSON.stringify(attempts));
	assert.equal(receiver.at('/got').filter((r) => r.body.id === emitted.id).length, 1);
});

test('the README flow: balance depleted -> Get Top-up Link -> the user\'s email gets the link', { timeout: 300_000 }, async () => {
	const webhookId = EXAMPLE.nodes.find((n) => n.name === 'Balance Depleted').webhookId;
	const target = `${n8n.url}webhook/${webhookId}/webhook`;
	await until('the Balance Depleted trigger subscribing', async () => {
		const { data } = await relay(`/v1/relay/hooks?target_url=${encodeURIComponent(target)}`);
		return data.length === 1 && data[0].event_types[0] === 'paywall.balance.depleted' ? data : null;
	}, 180);
	await depositTo(DEPLETED_USER, '2', 'dep_1');
	const charged = await relay('/v1/user/charge', {
		method: 'POST',
		headers: { 'Idempotency-Key': 'e2e-n8n-trigger-chg_1' },
		body: JSON.stringify({ user: DEPLETED_USER, amount: '2', metadata: { reference: 'chg_1' } }),
	});
	assert.equal(charged.success, true);

	const [mail] = await until('the top-up email', async () => {
		const sent = receiver.at('/mail');
		return sent.length ? sent : null;
	});
	const looked = receiver.received.filter((r) => r.method === 'GET' && r.path.startsWith('/users/'));
	assert.deepEqual(looked.map((r) => r.path), [`/users/${encodeURIComponent(DEPLETED_USER)}`]);
	assert.equal(mail.body.to, 'e2e_n8n_depleted@example.test');
	const state = await json(`${stack.sandbox_url}/_sandbox/state`, { headers: { 'X-Sandbox-Control': stack.sandbox_control } });
	assert.deepEqual(state.topups, [DEPLETED_USER], 'Get Top-up Link asked the sandbox once, for this user');
	assert.match(mail.body.text, /^Your balance is used up\. Top up here to continue: https:\/\/sandbox\.paywalls\.invalid\/topup\?user=e2e%3An8n_depleted$/);
});
