/**
 * The credential test: GET /v1/relay/me with the token, and for every way it can fail the same
 * message the node gives at run time (schemas/problems.json): a Base URL ending in /v1, Paywalls'
 * own address, a refused token, nothing listening, a redirect, something that is not a relay.
 */
import type { IDataObject, INodeCredentialTestResult } from 'n8n-workflow';
import { renderProblem } from './contract';
import { describeAnswer, describeNoAnswer, isPaywallsItself, parseBody } from './problem';

export interface TestResponse {
	statusCode: number;
	headers?: Record<string, unknown>;
	body?: unknown;
}

/** Sends one GET; resolves with any HTTP answer (redirects not followed), rejects when none came. */
export type TestRequest = (options: {
	url: string;
	headers: Record<string, string>;
}) => Promise<TestResponse>;

const fail = (message: string): INodeCredentialTestResult => ({ status: 'Error', message });

export async function testRelayCredential(data: IDataObject, send: TestRequest): Promise<INodeCredentialTestResult> {
	const rawUrl = String(data.baseUrl ?? '').trim();
	const token = String(data.token ?? '').trim();
	if (!rawUrl) return fail(renderProblem('missing-url', { tool: 'n8n' }));
	let parsed: URL;
	try {
		parsed = new URL(rawUrl);
		if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http');
	} catch {
		return fail(renderProblem('bad-url', { tool: 'n8n', value: rawUrl }));
	}
	const baseUrl = rawUrl.replace(/\/+$/, '');
	// Checked before any request: the token is never sent to Paywalls.
	if (isPaywallsItself(baseUrl)) return fail(renderProblem('paywalls-itself', { tool: 'n8n', url: baseUrl }));
	if (!token) return fail(renderProblem('missing-token', { tool: 'n8n' }));
	if (/^sk-/.test(token)) return fail(renderProblem('secret-key-pasted', { tool: 'n8n' }));

	const url = `${baseUrl}/v1/relay/me`;
	let response: TestResponse;
	try {
		response = await send({ url, headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } });
	} catch (error) {
		return fail(describeNoAnswer(error, { url, baseUrl }).message);
	}
	const body = parseBody(response.body) as IDataObject | undefined;
	const status = response.statusCode;
	if (
		status >= 200 &&
		status < 300 &&
		body &&
		typeof body === 'object' &&
		typeof body.id === 'string' &&
		Array.isArray(body.operations)
	) {
		const label = typeof body.label === 'string' && body.label ? `"${body.label}"` : body.id;
		const sandbox = body.sandbox === true ? ' (the relay runs in sandbox mode: no real money moves)' : '';
		return {
			status: 'OK',
			message: `Connected: relay token ${label} may ${(body.operations as string[]).join(', ')}${sandbox}`,
		};
	}
	// Anything else, a 2xx that is not /v1/relay/me's answer included, is what the node would say.
	return fail(describeAnswer(status, response.body, response.headers, { url, baseUrl }).message);
}
