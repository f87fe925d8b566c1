/**
 * The trigger's calls to the relay's REST hooks (POST/GET/DELETE /v1/relay/hooks), with the
 * request shapes from the shared relay-events.js (schemas/clients/relay-events.js, copied by
 * `npm run generate`) and the same error messages as the action node (problem.ts).
 */
import type { IDataObject, IHttpRequestOptions, INode } from 'n8n-workflow';
import * as generated from '../PaywallsRelay/generated/relay-events';
import {
	describeAnswer,
	describeNoAnswer,
	isPaywallsItself,
	parseBody,
	toNodeApiError,
	type CallContext,
} from '../PaywallsRelay/problem';

export interface Hook {
	id: string;
	target_url?: string;
	event_types?: string[];
	filter?: { user?: string } | null;
	[key: string]: unknown;
}

export interface RelayEvent {
	id: string;
	type: string;
	data?: IDataObject;
	[key: string]: unknown;
}

interface RelayEvents {
	EVENTS: { hooks_path: string; triggers: Record<string, { event_types: string[] }> };
	filterUser(value: unknown): string;
	hookBody(name: string, targetUrl: string, user: unknown): IDataObject;
	hookPath(id?: string): string;
	hookIdOf(body: unknown): string | null;
	sameHook(hook: unknown, name: string, targetUrl: string, user: unknown): boolean;
	eventOf(body: unknown): RelayEvent | null;
	matches(name: string, event: unknown, user: unknown): boolean;
	triggerItem(event: RelayEvent): IDataObject;
}

export const events = generated as unknown as RelayEvents;

export const CREDENTIAL = 'paywallsRelayApi';
/** Subscribing is quick; a relay that takes longer is not answering. */
export const TIMEOUT_MS = 30_000;

/** What a trigger context offers that these calls need (IHookFunctions has all of it). */
export interface RelayCaller {
	getNode(): INode;
	getCredentials(type: string): Promise<IDataObject>;
	helpers: {
		httpRequestWithAuthentication(this: unknown, type: string, options: IHttpRequestOptions): Promise<unknown>;
	};
}

interface FullResponse {
	statusCode: number;
	headers?: Record<string, unknown>;
	body: unknown;
}

/**
 * One call; a 2xx answer's parsed body (and the URL called), or a NodeApiError with the
 * catalogue's message. With `gone` set, the relay's own 404 problem (the hook no longer exists)
 * answers a `null` body instead.
 */
export async function hookCall(
	ctx: RelayCaller,
	method: 'GET' | 'POST' | 'DELETE',
	path: string,
	body?: IDataObject,
	gone = false,
): Promise<{ body: unknown; url: string }> {
	const credentials = await ctx.getCredentials(CREDENTIAL);
	const baseUrl = String(credentials.baseUrl ?? '')
		.trim()
		.replace(/\/+$/, '');
	const url = `${baseUrl}${path}`;
	const context: CallContext = { url, baseUrl };
	if (isPaywallsItself(url)) {
		throw toNodeApiError(ctx.getNode(), describeNoAnswer(new Error('paywalls itself'), context));
	}
	const options: IHttpRequestOptions = {
		method,
		url,
		headers: { Accept: 'application/json' },
		returnFullResponse: true,
		ignoreHttpStatusErrors: true,
		// Never follow a redirect: it would send the token and the webhook URL elsewhere.
		disableFollowRedirect: true,
		timeout: TIMEOUT_MS,
	};
	if (body !== undefined) {
		options.body = body;
		options.json = true;
	}
	let response: FullResponse;
	try {
		response = (await ctx.helpers.httpRequestWithAuthentication.call(ctx, CREDENTIAL, options)) as FullResponse;
	} catch (error) {
		throw toNodeApiError(ctx.getNode(), describeNoAnswer(error, context));
	}
	const status = response.statusCode;
	const parsed = parseBody(response.body);
	if (status >= 200 && status < 300) {
		// DELETE answers 204 with no body; the others must be the relay's JSON.
		if (method === 'DELETE' || (typeof parsed === 'object' && parsed !== null)) return { body: parsed, url };
	}
	const info = describeAnswer(status, response.body, response.headers, context);
	if (gone && info.problem === 'not-found') return { body: null, url };
	throw toNodeApiError(ctx.getNode(), info);
}

/** A 2xx whose JSON is not what the relay answers there: something else is at the Base URL. */
function notTheRelay(ctx: RelayCaller, body: unknown, url: string): Error {
	return toNodeApiError(ctx.getNode(), describeAnswer(200, body, {}, { url }));
}

/** GET /v1/relay/hooks?target_url=...: the token's hooks aiming at this URL (the relay answers {data: [...]}). */
export async function listHooks(ctx: RelayCaller, targetUrl: string): Promise<Hook[]> {
	const path = `${events.hookPath()}?target_url=${encodeURIComponent(targetUrl)}`;
	const { body, url } = await hookCall(ctx, 'GET', path);
	const page = body as IDataObject;
	if (!Array.isArray(page.data)) throw notTheRelay(ctx, body, url);
	return page.data.filter((hook): hook is Hook => events.hookIdOf(hook) !== null);
}

/** POST /v1/relay/hooks; the new hook's id. */
export async function createHook(ctx: RelayCaller, trigger: string, targetUrl: string, user: unknown): Promise<string> {
	const { body, url } = await hookCall(ctx, 'POST', events.hookPath(), events.hookBody(trigger, targetUrl, user));
	const id = events.hookIdOf(body);
	if (id === null) throw notTheRelay(ctx, body, url);
	return id;
}

/** DELETE /v1/relay/hooks/<id>; a hook the relay no longer has counts as deleted. */
export async function deleteHook(ctx: RelayCaller, id: string): Promise<void> {
	await hookCall(ctx, 'DELETE', events.hookPath(id), undefined, true);
}
