'use strict';
// The package rules n8n's verification checks, and what the built dist/ must contain.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, DIST, dist } = require('./helpers');

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

test('package.json follows the community node rules', () => {
	assert.match(pkg.name, /^(@[a-z0-9-]+\/)?n8n-nodes-/);
	assert.ok(pkg.keywords.includes('n8n-community-node-package'));
	assert.deepEqual(pkg.files, ['dist']);
	assert.equal(pkg.license, 'MIT');
	assert.equal(pkg.n8n.n8nNodesApiVersion, 1);
	assert.equal(pkg.n8n.strict, true);
	assert.deepEqual(pkg.n8n.nodes, [
		'dist/nodes/PaywallsRelay/PaywallsRelay.node.js',
		'dist/nodes/PaywallsRelayTrigger/PaywallsRelayTrigger.node.js',
	]);
	assert.equal(pkg.n8n.credentials.length, 1);
	for (const p of [...pkg.n8n.nodes, ...pkg.n8n.credentials]) {
		assert.match(p, /^dist\/.+\.js$/, p);
	}
	assert.deepEqual(Object.keys(pkg.dependencies ?? {}), [], 'no runtime dependencies');
	assert.deepEqual(pkg.peerDependencies, { 'n8n-workflow': '*' });
	assert.match(pkg.devDependencies['n8n-workflow'], /^\d+\.\d+\.\d+$/, 'n8n-workflow pinned for tsc');
	assert.equal(pkg.devDependencies['@n8n/node-cli'], '0.48.3');
	for (const script of ['preinstall', 'install', 'postinstall', 'prepare', 'prepublish']) {
		assert.equal(pkg.scripts[script], undefined, `no ${script} script`);
	}
	assert.ok(pkg.author.name && pkg.author.email);
});

test('eslint.config.mjs is the official config, unchanged', () => {
	const mine = fs.readFileSync(path.join(ROOT, 'eslint.config.mjs'), 'utf8').replace(/\s+/g, ' ').trim();
	const official = fs
		.readFileSync(
			path.join(ROOT, 'node_modules/@n8n/node-cli/dist/template/templates/shared/default/eslint.config.mjs'),
			'utf8',
		)
		.replace(/\s+/g, ' ')
		.trim();
	assert.equal(mine, official);
});

test('every file the n8n block names is built, with its icons', () => {
	for (const p of [...pkg.n8n.nodes, ...pkg.n8n.credentials]) {
		assert.ok(fs.existsSync(path.join(ROOT, p)), `${p} missing`);
	}
	const { PaywallsRelay } = dist('nodes/PaywallsRelay/PaywallsRelay.node.js');
	const { PaywallsRelayApi } = dist('credentials/PaywallsRelayApi.credentials.js');
	const nodeIcon = new PaywallsRelay().description.icon;
	const credIcon = new PaywallsRelayApi().icon;
	for (const icon of [nodeIcon.light, nodeIcon.dark]) {
		const file = path.join(DIST, 'nodes/PaywallsRelay', icon.replace(/^file:/, ''));
		assert.ok(fs.existsSync(file), `${file} missing`);
		assert.match(fs.readFileSync(file, 'utf8'), /^<svg[\s>]/);
	}
	for (const icon of [credIcon.light, credIcon.dark]) {
		assert.ok(fs.existsSync(path.join(DIST, 'credentials', icon.replace(/^file:/, ''))), icon);
	}
	assert.ok(fs.existsSync(path.join(DIST, 'nodes/PaywallsRelay/PaywallsRelay.node.json')));
});

test('dist/ is self-contained: it requires only n8n-workflow, node built-ins and itself', () => {
	const builtins = new Set(require('node:module').builtinModules);
	const walk = (dir) =>
		fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
			e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
		);
	const jsFiles = walk(DIST).filter((f) => f.endsWith('.js'));
	assert.ok(jsFiles.length >= 5);
	for (const file of jsFiles) {
		const src = fs.readFileSync(file, 'utf8');
		for (const m of src.matchAll(/require\("([^"]+)"\)/g)) {
			const id = m[1];
			const ok =
				id === 'n8n-workflow' ||
				builtins.has(id.replace(/^node:/, '')) ||
				(id.startsWith('.') && fs.existsSync(path.resolve(path.dirname(file), id + '.js')));
			assert.ok(ok, `${path.relative(DIST, file)} requires ${id}`);
		}
		assert.doesNotMatch(src, /schemas\/|idempotency-vectors/, `${file} reaches outside dist`);
	}
});
