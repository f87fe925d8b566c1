/**
 * Idempotency-Key derivation, v1 (schemas/idempotency.md in the Paywalls Relay repository).
 *
 *   pwk1_ + hex(sha256(utf8(JCS({"v":1,"op":op,"fields":{path: value}}))))
 *
 * The key is a function of the business fields only (never of an execution id or a time), so
 * n8n's "Retry On Fail", a re-run of the workflow and a webhook that starts two executions all
 * send the same key and the relay credits once. The relay, the Zapier app and this node share
 * the test vectors in schemas/idempotency-vectors.json.
 */
import { createHash } from 'crypto';

export type IdempotencyOp = 'deposit' | 'charge';

export const DEFAULT_DEDUPE_FIELDS: readonly string[] = ['user', 'amount', 'metadata'];

const PATH_PATTERN = /^(user|amount|metadata(\.[^.]+)*)$/;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isPlainObject(value: unknown): value is Record<string, unknown> {
	return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** RFC 8785 (JSON Canonicalization Scheme) serialization. */
export function canonicalJson(value: unknown): string {
	if (value === null) return 'null';
	switch (typeof value) {
		case 'boolean':
			return value ? 'true' : 'false';
		case 'number':
			if (!Number.isFinite(value)) {
				throw new Error(`JCS cannot serialize the number ${String(value)}`);
			}
			// ECMAScript number formatting is what JCS prescribes; -0 serializes as 0.
			return Object.is(value, -0) ? '0' : JSON.stringify(value);
		case 'string':
			// JSON.stringify escapes exactly what JCS requires: " \ and control characters.
			return JSON.stringify(value);
		case 'object': {
			if (Array.isArray(value)) {
				return '[' + value.map((item) => canonicalJson(item)).join(',') + ']';
			}
			const record = value as Record<string, unknown>;
			// The default sort compares UTF-16 code units, which is JCS's key order.
			const keys = Object.keys(record).sort();
			const members: string[] = [];
			for (const key of keys) {
				members.push(JSON.stringify(key) + ':' + canonicalJson(record[key]));
			}
			return '{' + members.join(',') + '}';
		}
		default:
			throw new Error(`JCS cannot serialize a value of type ${typeof value}`);
	}
}

/**
 * Canonical decimal text of an amount: "10.00" -> "10", "00.5" -> "0.5", 7 -> "7".
 * Text that is not a plain unsigned decimal is returned unchanged (the relay refuses such an
 * amount before any key is used).
 */
export function canonicalAmount(amount: string | number): string {
	const text = typeof amount === 'number' ? String(amount) : amount;
	const match = /^([0-9]+)(?:\.([0-9]*))?$/.exec(text);
	if (!match) return text;
	const integer = match[1].replace(/^0+(?=[0-9])/, '');
	const fraction = (match[2] ?? '').replace(/0+$/, '');
	return fraction ? `${integer}.${fraction}` : integer;
}

/** Whether a dedupe path is one the contract allows: user, amount, metadata, metadata.<key>... */
export function isValidDedupePath(path: string): boolean {
	return PATH_PATTERN.test(path);
}

function valueAt(body: unknown, path: string): unknown {
	let current: unknown = body;
	for (const segment of path.split('.')) {
		if (!isPlainObject(current) || !Object.prototype.hasOwnProperty.call(current, segment)) {
			return null;
		}
		current = current[segment];
	}
	return current === undefined ? null : current;
}

/** The object that is canonicalized and hashed; exported for tests and debugging. */
export function idempotencyPayload(
	op: IdempotencyOp,
	body: Record<string, unknown>,
	fields: readonly string[] = DEFAULT_DEDUPE_FIELDS,
): { v: 1; op: IdempotencyOp; fields: Record<string, Json> } {
	if (op !== 'deposit' && op !== 'charge') {
		throw new Error(`Unknown idempotency operation "${String(op)}"`);
	}
	const selected: Record<string, Json> = {};
	for (const path of fields) {
		if (!isValidDedupePath(path)) {
			throw new Error(
				`"${path}" is not a dedupe field: use user, amount, metadata or metadata.<key>`,
			);
		}
		let value = valueAt(body, path);
		if (path === 'amount' && (typeof value === 'string' || typeof value === 'number')) {
			value = canonicalAmount(value);
		}
		selected[path] = value as Json;
	}
	return { v: 1, op, fields: selected };
}

/** The Idempotency-Key for one request: "pwk1_" + 64 lowercase hex digits. */
export function deriveIdempotencyKey(
	op: IdempotencyOp,
	body: Record<string, unknown>,
	fields: readonly string[] = DEFAULT_DEDUPE_FIELDS,
): string {
	const canonical = canonicalJson(idempotencyPayload(op, body, fields));
	return 'pwk1_' + createHash('sha256').update(canonical, 'utf8').digest('hex');
}
