/**
 * Every answer that is not a success, and every call that got no answer, becomes one message
 * from the shared problem catalogue (schemas/problems.json, rendered by relay-contract.js):
 * the same words at run time and in the credential test, and the same as the Zapier app's.
 * This file only classifies: which problem an answer is, and the facts its message needs
 * (where a redirect points, what a proxy said, why a connection failed).
 */
import { NodeApiError, type INode, type JsonObject } from 'n8n-workflow';
import { PROBLEM_PREFIX, problemName, renderProblem, type Operation, type ProblemContext } from './contract';

export interface Problem {
	type?: string;
	title?: string;
	status?: number;
	detail?: string;
	request_id?: string;
	limit?: string;
	remaining?: string;
	reason?: string;
	upstream_status?: number;
	[key: string]: unknown;
}

export interface RelayErrorInfo {
	/** The message n8n shows in bold: what happened and what to do. */
	message: string;
	/** The longer text under it: the relay's detail, the problem type, the request id. */
	description: string;
	/** The problem's name in schemas/problems.json ("validation", "http-redirect", "network"...). */
	problem: string;
	/** The HTTP status, or 0 when nothing answered. */
	status: number;
	retryAfter?: string;
	body: Problem;
}

export interface CallContext {
	op?: Operation;
	/** The URL that was called. */
	url: string;
	/** The credential's Base URL as the user typed it. */
	baseUrl?: string;
	user?: string;
}

export function headerValue(headers: Record<string, unknown> | undefined, name: string): string | undefined {
	if (!headers) return undefined;
	const wanted = name.toLowerCase();
	for (const [key, value] of Object.entries(headers)) {
		if (key.toLowerCase() === wanted) {
			return Array.isArray(value) ? String(value[0]) : value == null ? undefined : String(value);
		}
	}
	return undefined;
}

/** Parse a response body that may arrive as an object, a JSON string or a Buffer. */
export function parseBody(body: unknown): unknown {
	let value = body;
	if (typeof Buffer !== 'undefined' && Buffer.isBuffer(value)) {
		value = value.toString('utf8');
	}
	if (typeof value === 'string') {
		const text = value.trim();
		if (text.startsWith('{') || text.startsWith('[')) {
			try {
				return JSON.parse(text);
			} catch {
				return value;
			}
		}
	}
	return value;
}

/** Where a redirect points, for a message: origin and path only (a login page's query may carry state or tokens). */
export function describeLocation(location: string | undefined, baseUrl?: string): string | undefined {
	if (!location) return undefined;
	try {
		const url = baseUrl ? new URL(location, baseUrl) : new URL(location);
		return `${url.origin}${url.pathname}`;
	} catch {
		return location.split(/[?#]/)[0].slice(0, 200);
	}
}

/** The Base URL to suggest when a redirect only moves http:// to https:// on the same host. */
export function httpsSuggestion(baseUrl: string | undefined, location: string | undefined): string | undefined {
	if (!baseUrl || !location) return undefined;
	try {
		const from = new URL(baseUrl);
		const to = new URL(location, baseUrl);
		if (from.protocol !== 'http:' || to.protocol !== 'https:' || from.hostname !== to.hostname) {
			return undefined;
		}
		const base = from.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
		return `https://${to.host}${base}`;
	} catch {
		return undefined;
	}
}

/** Paywalls' own API (api.paywalls.ai): a relay token means nothing there. */
export function isPaywallsItself(url: string | undefined): boolean {
	if (!url) return false;
	try {
		const host = new URL(url).hostname.toLowerCase();
		return host === 'paywalls.ai' || host.endsWith('.paywalls.ai');
	} catch {
		return false;
	}
}

function kindOf(parsed: unknown): string {
	if (parsed === undefined || parsed === null || parsed === '') return 'no body';
	if (Array.isArray(parsed)) return 'a JSON array';
	if (typeof parsed === 'string') return 'text';
	return `a JSON ${typeof parsed}`;
}

/** A short, single-line quote of a non-relay answer (a proxy's or login page's text). */
function said(parsed: unknown): string | undefined {
	if (parsed === undefined || parsed === null || parsed === '') return undefined;
	const text = typeof parsed === 'string' ? parsed : JSON.stringify(parsed);
	const plain = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
	return plain ? plain.slice(0, 120) : undefined;
}

function info(
	problem: string,
	status: number,
	body: Problem,
	context: ProblemContext,
	retryAfter?: string,
): RelayErrorInfo {
	const parts: string[] = [];
	if (typeof body.detail === 'string' && body.detail) parts.push(body.detail);
	if (typeof body.type === 'string') parts.push(`Problem type: ${body.type}`);
	if (body.request_id) parts.push(`Request id: ${body.request_id}`);
	const source = body.type ? body : problem;
	return {
		message: renderProblem(source, context),
		description: parts.join('\n'),
		problem,
		status,
		retryAfter,
		body,
	};
}

/**
 * The error for an answer that is not a success: a redirect (never followed), a 2xx without
 * the relay's JSON object, a problem+json answer, or anything else (a proxy, Paywalls itself).
 */
export function describeAnswer(
	status: number,
	rawBody: unknown,
	headers: Record<string, unknown> | undefined,
	call: CallContext,
): RelayErrorInfo {
	const parsed = parseBody(rawBody);
	const retryAfter = headerValue(headers, 'retry-after');
	const context: ProblemContext = {
		tool: 'n8n',
		op: call.op,
		url: call.url,
		status,
		user: call.user,
		retry_after: retryAfter,
	};
	if (status >= 300 && status < 400) {
		const raw = headerValue(headers, 'location');
		const location = describeLocation(raw, call.url);
		const body: Problem = { status, ...(location ? { location } : {}) };
		return info('http-redirect', status, body, {
			...context,
			location,
			suggestion: httpsSuggestion(call.baseUrl ?? call.url, raw),
		});
	}
	if (status >= 200 && status < 300) {
		return info('not-json', status, { status }, { ...context, got: kindOf(parsed) });
	}
	const isObject = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
	const body = (isObject ? parsed : { status }) as Problem;
	if (isObject && typeof body.type === 'string' && body.type.startsWith(PROBLEM_PREFIX)) {
		// The relay's own answer; unknown types render as unknown-problem with title and detail.
		return info(problemName(body) ?? 'unknown-problem', status, body, context, retryAfter);
	}
	if (isPaywallsItself(call.url)) {
		return info('paywalls-itself', status, { status }, context);
	}
	if (status === 404 || status === 405) {
		return info('no-relay-here', status, { status }, context);
	}
	return info('not-a-relay', status, { status, detail: said(parsed) }, { ...context, said: said(parsed) });
}

const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ECONNABORTED', 'ESOCKETTIMEDOUT']);
// After these the request may have reached the relay: the outcome of a money call is unknown.
const MAYBE_SENT_CODES = new Set(['ECONNRESET', 'EPIPE']);

function errorCode(error: unknown): string | undefined {
	let current: unknown = error;
	for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
		const code = (current as { code?: unknown }).code;
		if (typeof code === 'string' && /^E[A-Z_]+$/.test(code)) return code;
		current = (current as { cause?: unknown }).cause;
	}
	return undefined;
}

/** The error for a call that got no HTTP answer at all (refused, unknown host, timeout, TLS). */
export function describeNoAnswer(error: unknown, call: CallContext): RelayErrorInfo {
	const code = errorCode(error);
	const message = error instanceof Error ? error.message : String(error);
	const context: ProblemContext = { tool: 'n8n', op: call.op, url: call.url, user: call.user };
	if (isPaywallsItself(call.url)) {
		return info('paywalls-itself', 0, { status: 0 }, context);
	}
	const timedOut =
		(code !== undefined && TIMEOUT_CODES.has(code)) ||
		(code !== undefined && MAYBE_SENT_CODES.has(code) && (call.op === 'deposit' || call.op === 'charge')) ||
		/timeout/i.test(message);
	if (timedOut) {
		return info('timeout', 0, { status: 0, detail: code ?? message }, context);
	}
	return info('network', 0, { status: 0, detail: code ?? message }, { ...context, cause: code ?? message.slice(0, 120) });
}

/** The NodeApiError n8n shows for an answer or a failed call. */
export function toNodeApiError(node: INode, error: RelayErrorInfo, itemIndex?: number): NodeApiError {
	return new NodeApiError(node, error.body as unknown as JsonObject, {
		message: error.message,
		description: error.description,
		httpCode: error.status ? String(error.status) : undefined,
		itemIndex,
	});
}
