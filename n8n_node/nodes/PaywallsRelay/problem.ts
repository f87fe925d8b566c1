/**
 * Turning the relay's RFC 9457 problem+json answers into n8n errors whose message says what to
 * fix: the field that failed validation, the token limit that refused the call, or whether a
 * retry is safe.
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
): RelayErrorInfo {
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
			message = body.title
				? `${body.title}${detail ? `: ${detail}` : ''}`
				: `The relay answered HTTP ${status}${detail ? `: ${detail}` : ''}`;
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
