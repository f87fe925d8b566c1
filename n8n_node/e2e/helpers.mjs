// Helpers both end-to-end suites use: a free port, a log's last lines, and the relay's CLI (made on demand).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function freePort() {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.unref();
		server.on('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const { port } = server.address();
			server.close(() => resolve(port));
		});
	});
}

export function tail(file, lines = 40) {
	try {
		return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
	} catch {
		return '(no log)';
	}
}

/** The `paywalls-relay` CLI: PAYWALLS_RELAY_BIN, or the repository's venv (made by `make venv` if missing). */
export function relayBin() {
	if (process.env.PAYWALLS_RELAY_BIN) return process.env.PAYWALLS_RELAY_BIN;
	const bin = path.join(REPO, '.venv', 'bin', 'paywalls-relay');
	if (!fs.existsSync(bin)) execFileSync('make', ['-C', REPO, 'venv'], { stdio: ['ignore', 'inherit', 'inherit'] });
	return bin;
}

/** dev-stack's one JSON line (`dev-stack --json`), or a rejection with its log's tail if it prints none in 60 s. */
export function devStackInfo(child, log) {
	return new Promise((resolve, reject) => {
		let buffer = '';
		const timer = setTimeout(() => reject(new Error(`dev-stack printed nothing in 60 s:\n${tail(log)}`)), 60_000);
		child.stdout.on('data', (chunk) => {
			buffer += chunk;
			const end = buffer.indexOf('\n');
			if (end >= 0) {
				clearTimeout(timer);
				resolve(JSON.parse(buffer.slice(0, end)));
			}
		});
		child.on('exit', (code, signal) => {
			clearTimeout(timer);
			reject(new Error(`dev-stack exited ${JSON.stringify({ code, signal })}:\n${tail(log)}`));
		});
	});
}
