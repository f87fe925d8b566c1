/**
 * What the node does for one item: read the inputs, build the request with the shared contract
 * (relay-contract.js: body, Idempotency-Key, dry run), call the relay without following
 * redirects, and turn the answer into a snake_case item or one error whose message comes from
 * the shared problem catalogue.
 */
import {
	NodeOperationError,
	type IDataObject,
	type IExecuteFunctions,
	type IHttpRequestOptions,
	type INode,
} from 'n8n-workflow';
import { OPERATION_OF, PARAMETER_OF } from './generated/properties';
import {
	CONTRACT,
	buildOutput,
	buildReadOutput,
	buildRequest,
	isContractError,
	type BuiltRequest,
	type Operation,
} from './contract';
import {
	describeAnswer,
	describeNoAnswer,
	headerValue,
	isPaywallsItself,
	parseBody,
	toNodeApiError,
	type CallContext,
	type RelayErrorInfo,
} from './problem';

export const MAX_PAGE_SIZE = 100;
export const CREDENTIAL = 'paywallsRelayApi';
/** A deposit or charge waits at most this long: the relay's own upstream budget is shorter. */
export const TIMEOUT_MS = 60_000;

// What an error item needs beyond the message (problem name, status, the relay's fields),
// kept beside the NodeApiError / NodeOperationError n8n shows.
const ERROR_INFO = new WeakMap<Error, RelayErrorInfo>();

function withInfo<E extends Error>(error: E, info: RelayErrorInfo): E {
	ERROR_INFO.set(error, info);
	return error;
}

export function errorInfo(error: unknown): RelayErrorInfo | undefined {
	return error instanceof Error ? ERROR_INFO.get(error) : undefined;
}

/** The contract's operation for this item's Resource and Operation. */
export function operationFor(node: INode, resource: string, operation: string): Operation {
	const op = OPERATION_OF[`${resource}:${operation}`] as Operation | undefined;
	if (op) return op;
	if (node.typeVersion < 2) {
		throw new NodeOperationError(
			node,
			`This Paywalls Relay node was made with version 1 of the node (${resource}: ${operation}), whose operations and outputs changed in version 2`,
			{
				description:
					'Add a new Paywalls Relay node, pick the same operation (Deposit → Deposit Credits, Charge → Charge User, Balance → Get Balance, Deposit → List Deposits) and map the fields again; outputs are now snake_case (new_balance, idempotency_key, replayed). See the package README, "Upgrading from version 1".',
			},
		);
	}
	throw new NodeOperationError(node, `Unknown operation "${operation}" for resource "${resource}"`);
}

function parameter(ctx: IExecuteFunctions, itemIndex: number, path: string): unknown {
	const [first, rest] = path.split('.', 2);
	const value = ctx.getNodeParameter(first, itemIndex, undefined) as unknown;
	if (rest === undefined) return value;
	return value && typeof value === 'object' ? (value as IDataObject)[rest] : undefined;
}

/** This item's contract inputs (user, amount, ..., dry_run), read from the node's parameters. */
export function readInputs(ctx: IExecuteFunctions, itemIndex: number, op: Operation): Record<string, unknown> {
	const inputs: Record<string, unknown> = {};
	// client-contract.json operations.<op>.inputs; List Deposits reads its user from Filters.
	const spec = op === 'deposits' ? [] : CONTRACT.operations[op].inputs;
	for (const name of spec) {
		const where = PARAMETER_OF[name];
		if (!where) continue;
		let value = parameter(ctx, itemIndex, where);
		if (name === 'extra_metadata' && value && typeof value === 'object' && !Array.isArray(value)) {
			// fixedCollection {pairs: [{key, value}]} -> the rows relay-contract.js reads. Anything
			// else (an expression giving text or a list) goes as it is: the contract refuses or reads it.
			const pairs = (value as IDataObject).pairs;
			if (pairs !== undefined || Object.keys(value).length === 0) value = pairs ?? [];
		}
		inputs[name] = value;
	}
	return inputs;
}

export function baseUrlOf(credentials: IDataObject): string {
	return String(credentials.baseUrl ?? '')
		.trim()
		.replace(/\/+$/, '');
}

/** The request the contract builds for this item, or a NodeOperationError with the client_errors text. */
export function requestFor(node: INode, itemIndex: number, op: Operation, inputs: Record<string, unknown>): BuiltRequest {
	try {
		return buildRequest(op, inputs);
	} catch (error) {
		if (isContractError(error)) {
			const info: RelayErrorInfo = {
				message: error.message,
				description: 'Nothing was sent to the relay.',
				problem: error.code,
				status: 0,
				body: { status: 0 },
			};
			throw withInfo(new NodeOperationError(node, error.message, { itemIndex, description: info.description }), info);
		}
		throw new NodeOperationError(node, error as Error, { itemIndex });
	}
}

interface Answer {
	data: IDataObject;
	headers: Record<string, unknown>;
}

/** One call to the relay; a success is a 2xx with a JSON object, everything else a RelayCallError. */
export async function call(
	ctx: IExecuteFunctions,
	itemIndex: number,
	baseUrl: string,
	request: { op: Operation; method: 'GET' | 'POST'; path: string; query: IDataObject; body: unknown; headers: Record<string, string> },
	user?: string,
): Promise<Answer> {
	const url = `${baseUrl}${request.path}`;
	const context: CallContext = { op: request.op, url, baseUrl, user };
	if (isPaywallsItself(url)) {
		// Never send the relay token (or a body) to Paywalls' own API: it only answers 401.
		const info = describeNoAnswer(new Error('paywalls itself'), context);
		throw withInfo(toNodeApiError(ctx.getNode(), info, itemIndex), info);
	}
	const options: IHttpRequestOptions = {
		method: request.method,
		url,
		qs: request.query,
		headers: { Accept: 'application/json', ...request.headers },
		returnFullResponse: true,
		ignoreHttpStatusErrors: true,
		// Never follow a redirect (http:// to https://, a login page, a load balancer): a followed
		// 301/302 turns the POST into a GET and a followed 307/308 re-sends the body and token
		// elsewhere, either possibly ending in a 2xx that is not the relay's answer.
		disableFollowRedirect: true,
		timeout: TIMEOUT_MS,
	};
	if (request.body !== null && request.body !== undefined) {
		options.body = request.body as IDataObject;
		options.json = true;
	}
	let response: { statusCode: number; headers: Record<string, unknown>; body: unknown };
	try {
		response = await ctx.helpers.httpRequestWithAuthentication.call(ctx, CREDENTIAL, options);
	} catch (error) {
		const info = describeNoAnswer(error, context);
		throw withInfo(toNodeApiError(ctx.getNode(), info, itemIndex), info);
	}
	const status = response.statusCode;
	const body = parseBody(response.body);
	if (status >= 200 && status < 300 && typeof body === 'object' && body !== null && !Array.isArray(body)) {
		return { data: body as IDataObject, headers: response.headers ?? {} };
	}
	const info = describeAnswer(status, response.body, response.headers, context);
	throw withInfo(toNodeApiError(ctx.getNode(), info, itemIndex), info);
}

/** Deposit Credits / Charge User: the snake_case output of the contract (a dry run's too). */
export async function moneyCall(
	ctx: IExecuteFunctions,
	itemIndex: number,
	baseUrl: string,
	request: BuiltRequest,
): Promise<IDataObject> {
	const answer = await call(ctx, itemIndex, baseUrl, request, String(request.body?.user ?? ''));
	return buildOutput(request.op, request, answer.data, {
		idempotency_key: headerValue(answer.headers, 'idempotency-key'),
		replayed: headerValue(answer.headers, 'idempotent-replayed') === 'true',
		sandbox: headerValue(answer.headers, 'x-relay-sandbox') === 'true',
	}) as IDataObject;
}

/** Get Balance: {user, balance, balance_formatted, sandbox}; Get Top-up Link: {user, topup_url, sandbox}. */
export async function balanceCall(
	ctx: IExecuteFunctions,
	itemIndex: number,
	baseUrl: string,
	request: BuiltRequest,
): Promise<IDataObject> {
	const answer = await call(ctx, itemIndex, baseUrl, request, request.query.user ?? '');
	return buildReadOutput(request.op, request, answer.data, {
		sandbox: headerValue(answer.headers, 'x-relay-sandbox') === 'true',
	}) as IDataObject;
}

/** List Deposits: follows next_cursor until the limit or the last page; entries as the contract's outputs. */
export async function listDeposits(ctx: IExecuteFunctions, itemIndex: number, baseUrl: string): Promise<IDataObject[]> {
	const returnAll = ctx.getNodeParameter('returnAll', itemIndex, false) as boolean;
	const limit = returnAll
		? Infinity
		: Math.max(1, Math.floor(Number(ctx.getNodeParameter('limit', itemIndex, 50))) || 50);
	const filters = (ctx.getNodeParameter('filters', itemIndex, {}) ?? {}) as IDataObject;
	const query: IDataObject = {};
	const user = String(filters.user ?? '').trim();
	if (user) query.user = user;
	const since = filters.since;
	if (since !== undefined && since !== null && String(since).trim() !== '') {
		const date = new Date(String(since));
		if (Number.isNaN(date.getTime())) {
			throw new NodeOperationError(ctx.getNode(), `Since "${String(since)}" is not a date and time`, { itemIndex });
		}
		query.since = date.toISOString();
	}
	const results: IDataObject[] = [];
	// A relay that kept answering the same cursor would loop forever; stop on a repeat.
	const seen = new Set<string>();
	let cursor: string | undefined;
	for (;;) {
		const qs: IDataObject = { ...query, limit: Math.min(MAX_PAGE_SIZE, limit - results.length) };
		if (cursor) qs.cursor = cursor;
		const page = await call(ctx, itemIndex, baseUrl, {
			op: 'deposits',
			method: 'GET',
			path: '/v1/relay/deposits',
			query: qs,
			body: null,
			headers: {},
		});
		const data = buildReadOutput('deposits', { query: {} }, page.data, {}) as IDataObject[];
		for (const entry of data) {
			if (results.length >= limit) break;
			results.push(entry);
		}
		const next = typeof page.data.next_cursor === 'string' && page.data.next_cursor ? page.data.next_cursor : undefined;
		// A page may be short, even empty, and still carry a cursor: only its absence ends the list.
		if (!next || results.length >= limit || seen.has(next)) break;
		seen.add(next);
		cursor = next;
	}
	return results;
}

/**
 * The item Continue On Fail hands on: the error, what it was about (user and amount as the
 * input gave them) and the details to branch on. With "Continue (using error output)" n8n
 * routes only items whose keys are error/message/details to the error output (and adds the
 * input item's fields there), so user and amount then live in details only; with "Continue"
 * they are at the top, beside error, as in a success item.
 */
export function errorItem(
	error: Error,
	inputs: Record<string, unknown>,
	key: string | null,
	toErrorOutput: boolean,
): IDataObject {
	const info = errorInfo(error);
	const about: IDataObject = {};
	if ('user' in inputs) about.user = (inputs.user ?? null) as IDataObject[string];
	if ('amount' in inputs) about.amount = (inputs.amount ?? null) as IDataObject[string];
	const details: IDataObject = info
		? { status: info.status, problem: info.problem, ...(info.body as IDataObject) }
		: {};
	if (info?.retryAfter) details.retry_after = info.retryAfter;
	// The key the call carried: to find it in the relay's ledger, or to retry by hand.
	if (key) details.idempotency_key = key;
	Object.assign(details, about);
	const message = info?.message ?? error.message;
	return toErrorOutput ? { error: message, details } : { error: message, ...about, details };
}
