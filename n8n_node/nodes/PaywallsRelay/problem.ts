/**
 * Turning the relay's RFC 9457 problem+json answers into n8n errors whose message says what to
 * fix: the field that failed validation, the token limit that refused the call, or whether a
 * retry is safe. Any other answer outside 200-299 is an error too: a redirect (never followed,
 * see requestDefaults.disableFollowRedirect) names where it points and the Base URL to use, and
 * a 2xx without the relay's JSON object is not taken as a success.
 */
import { NodeApiError, type INode, type JsonObject } from 'n8n-workflow';

export const PROBLEM_PREFIX = 'urn:paywalls-relay:problem:';

export interface ProblemFieldError {
	field?: string;
	pointer?: string;
	message?: string;
}

export interface Problem {
	type?: string;
	title?: string;
	status?: number;
	detail?: string;
	instance?: string;
	request_id?: string;
	errors?: ProblemFieldError[];
	limit?: string;
	remaining?: string;
	reason?: string;
	upstream_status?: number;
	[key: string]: unknown;
}

export interface RelayErrorInfo {
	/** The message n8n shows in bold: names the field or limit and what to do. */
	message: string;
	/** The longer text under it. */
	description: string;
	/** The problem's short name ("validation", "forbidden", ...) or "http-<status>". */
	problem: string;
	status: number;
	retryAfter?: string;
	body: Problem;
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

const BASE_URL_FIX =
	"Set the Base URL of the Paywalls Relay API credential to the relay's https:// address exactly as the relay operator gave it (without /v1).";

const SAFE_TO_RETRY = 'Retrying with the same fields is safe: the Idempotency-Key never applies it twice.';

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

function describeRedirect(
	status: number,
	headers: Record<string, unknown> | undefined,
	baseUrl: string | undefined,
): RelayErrorInfo {
	const rawLocation = headerValue(headers, 'location');
	const location = describeLocation(rawLocation, baseUrl);
	const suggestion = httpsSuggestion(baseUrl, rawLocation);
	const at = baseUrl ? ` (${baseUrl})` : '';
	const message =
		`The Base URL of the Paywalls Relay API credential${at} redirects: HTTP ${status}` +
		`${location ? ` to ${location}` : ' without a Location'}. The node does not follow redirects to the relay ` +
		'(a login page or another server could answer in its place), so this call failed. ' +
		`${suggestion ? `Use ${suggestion} as the Base URL. ` : ''}${BASE_URL_FIX}`;
	return {
		message,
		description: `${SAFE_TO_RETRY} Check with the relay operator if the relay's address changed.`,
		problem: 'redirected',
		status,
		body: { status, detail: '', ...(location ? { location } : {}) },
	};
}

/** A 2xx answer whose body is not the relay's JSON object (HTML, text, an array, nothing). */
export function describeUnexpectedBody(
	status: number,
	rawBody: unknown,
	operation?: 'deposit' | 'charge',
): RelayErrorInfo {
	const parsed = parseBody(rawBody);
	const kind =
		parsed === undefined || parsed === null || parsed === ''
			? 'no body'
			: Array.isArray(parsed)
				? 'a JSON array'
				: typeof parsed === 'string'
					? 'text'
					: `a JSON ${typeof parsed}`;
	const message =
		`The relay answered HTTP ${status} without the expected body (got ${kind})` +
		`${operation ? `, so it is not known whether this ${operation} was applied` : ''}. ` +
		`Check that the credential's Base URL points at your Paywalls Relay. ${BASE_URL_FIX}`;
	return {
		message,
		description: SAFE_TO_RETRY,
		problem: 'unexpected-body',
		status,
		body: { status, detail: '' },
	};
}

function fieldList(errors: ProblemFieldError[] | undefined): string {
	if (!Array.isArray(errors) || errors.length === 0) return '';
	return errors
		.map((e) => {
			const field = e.field || (e.pointer ? e.pointer.replace(/^\//, '').replace(/\//g, '.') : '');
			return field ? `${field}: ${e.message ?? 'invalid'}` : String(e.message ?? 'invalid');
		})
		.join('; ');
}

/** Describe a relay error answer in words a workflow author can act on. */
export function describeRelayError(
	status: number,
	rawBody: unknown,
	headers?: Record<string, unknown>,
	baseUrl?: string,
): RelayErrorInfo {
	if (status >= 300 && status < 400) {
		return describeRedirect(status, headers, baseUrl);
	}
	const parsed = parseBody(rawBody);
	const isProblem =
		typeof parsed === 'object' &&
		parsed !== null &&
		!Array.isArray(parsed) &&
		typeof (parsed as Problem).type === 'string';
	const body: Problem = isProblem
		? (parsed as Problem)
		: {
				status,
				detail:
					typeof parsed === 'string'
						? parsed.slice(0, 500)
						: parsed === undefined || parsed === null || parsed === ''
							? ''
							: JSON.stringify(parsed).slice(0, 500),
			};
	const type = typeof body.type === 'string' ? body.type : '';
	const name = type.startsWith(PROBLEM_PREFIX) ? type.slice(PROBLEM_PREFIX.length) : `http-${status}`;
	const detail = typeof body.detail === 'string' ? body.detail : '';
	const retryAfter = headerValue(headers, 'retry-after');
	const after = retryAfter ? ` Retry after ${retryAfter} s.` : '';
	let message: string;

	switch (name) {
		case 'validation': {
			const fields = fieldList(body.errors);
			message = fields ? `Invalid field ${fields}` : `The relay refused the fields: ${detail}`;
			break;
		}
		case 'forbidden': {
			if (body.limit) {
				const left = body.remaining;
				const hint =
					left === undefined || left === null
						? ''
						: body.limit === 'max_amount'
							? ` (maximum per call: ${left})`
							: ` (remaining: ${left})`;
				message = `The relay token's limit "${body.limit}" refused this call${hint}`;
			} else {
				message = `The relay token may not do this: ${detail || 'forbidden'}`;
			}
			break;
		}
		case 'unauthorized': {
			const reason = typeof body.reason === 'string' ? ` (${body.reason})` : '';
			message = `The relay refused the token${reason}: ${detail || 'missing, unknown, revoked or expired'}. Check the Paywalls Relay API credential.`;
			break;
		}
		case 'idempotency-key-reused':
			message =
				'This Idempotency-Key was used before with different fields. A retry must send the same user, amount and metadata; a new operation needs a new reference.';
			break;
		case 'idempotency-in-flight':
			message = `The same call is still being processed by the relay.${after} Retrying with the same fields is safe.`;
			break;
		case 'rate-limited':
			message = `The relay's rate limit for this token was reached.${after}`;
			break;
		case 'upstream-rejected':
			message = `Paywalls refused the call: ${detail || body.title || status}`;
			break;
		case 'upstream-ambiguous':
			message =
				'Paywalls did not answer in time, so the outcome is unknown. Retrying with the same fields is safe (turn on Retry On Fail): it never credits twice.';
			break;
		case 'upstream-unavailable':
			message =
				'Paywalls could not be reached and nothing changed. Retry (Retry On Fail is safe).';
			break;
		case 'upstream-misdirected':
			message =
				"The relay cannot reach Paywalls: its PAYWALLS_BASE_URL answered with a redirect. Nothing was applied. Ask the relay operator to fix the relay's PAYWALLS_BASE_URL; then retrying with the same fields is safe.";
			break;
		case 'outcome-unrecorded':
			message = `Paywalls was called, but the relay could not record its answer, so the outcome is unknown.${after} Retrying with the same fields is safe (turn on Retry On Fail): it never applies twice.`;
			break;
		case 'token-changed':
			message = `The relay token's settings changed during this call, and nothing was sent to Paywalls.${after} Retrying is safe (Retry On Fail does it).`;
			break;
		case 'token-identity-locked':
			message = `The relay token's namespace or dedupe fields cannot change while it has stored keys${detail ? `: ${detail}` : ''}`;
			break;
		case 'namespace-rule-differs':
			message = `Tokens of one relay namespace must dedupe on the same fields${detail ? `: ${detail}` : ''}`;
			break;
		case 'unavailable':
			message = `The relay's database is unavailable.${after} Retrying with the same fields is safe.`;
			break;
		case 'internal':
			message = 'The relay hit an internal error. Retrying with the same fields is safe.';
			break;
		case 'not-found':
		case 'method-not-allowed':
			message = `The relay has no such endpoint (HTTP ${status}). Check the credential's Base URL: the relay's address without /v1.`;
			break;
		case 'malformed-body':
		case 'body-too-large':
		case 'unsupported-media-type':
			message = `The relay refused the request body: ${detail || body.title || status}`;
			break;
		default:
			if (!isProblem) {
				// A proxy, login page or load balancer, not the relay (which always answers problem+json).
				message =
					`The credential's Base URL answered HTTP ${status}${detail ? `: ${detail}` : ''}, which is not an answer of a Paywalls Relay. ` +
					`Check the Base URL, or ask the relay operator what is in front of the relay (a proxy or load balancer). ${SAFE_TO_RETRY}`;
			} else {
				message = body.title
					? `${body.title}${detail ? `: ${detail}` : ''}`
					: `The relay answered HTTP ${status}${detail ? `: ${detail}` : ''}`;
			}
	}

	const parts: string[] = [];
	if (detail && !message.includes(detail)) parts.push(detail);
	if (type) parts.push(`Problem type: ${type}`);
	if (body.request_id) parts.push(`Request id: ${body.request_id}`);
	return {
		message,
		description: parts.join('\n'),
		problem: name,
		status,
		retryAfter,
		body,
	};
}

/** The NodeApiError n8n shows for a relay error answer. */
export function relayErrorToNodeApiError(node: INode, info: RelayErrorInfo, itemIndex?: number): NodeApiError {
	return new NodeApiError(node, info.body as unknown as JsonObject, {
		message: info.message,
		description: info.description,
		httpCode: String(info.status),
		itemIndex,
	});
}
