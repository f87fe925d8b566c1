/**
 * The hooks of the declarative routing: preSend builds the bodies and the Idempotency-Key,
 * postReceive turns relay answers into items or errors, and the pagination function follows
 * next_cursor for List Deposits.
 */
import {
	NodeOperationError,
	type DeclarativeRestApiSettings,
	type IDataObject,
	type IExecutePaginationFunctions,
	type IExecuteSingleFunctions,
	type IHttpRequestOptions,
	type IN8nHttpFullResponse,
	type INodeExecutionData,
} from 'n8n-workflow';
import {
	DEFAULT_DEDUPE_FIELDS,
	deriveIdempotencyKey,
	isValidDedupePath,
	type IdempotencyOp,
} from './idempotency';
import {
	describeRelayError,
	describeUnexpectedBody,
	headerValue,
	parseBody,
	relayErrorToNodeApiError,
	type RelayErrorInfo,
} from './problem';

/** Presets of the "Deduplicate On" option and the dedupe fields each one means. */
export const DEDUPE_PRESETS: Record<string, readonly string[]> = {
	all: DEFAULT_DEDUPE_FIELDS,
	reference: ['user', 'metadata.reference'],
	amountReference: ['user', 'amount', 'metadata.reference'],
};

export const MAX_PAGE_SIZE = 100;

interface MetadataPair {
	key?: string;
	value?: unknown;
}

function operationError(ctx: IExecuteSingleFunctions, message: string, description?: string) {
	return new NodeOperationError(ctx.getNode(), message, {
		itemIndex: ctx.getItemIndex(),
		description,
	});
}

function textParameter(ctx: IExecuteSingleFunctions, name: string): string {
	const value = ctx.getNodeParameter(name, '') as unknown;
	if (value === undefined || value === null) return '';
	return (typeof value === 'string' ? value : String(value)).trim();
}

/** The dedupe field list chosen in the node's options for this item. */
export function dedupeFieldsFor(ctx: IExecuteSingleFunctions): string[] {
	const options = (ctx.getNodeParameter('options', {}) ?? {}) as IDataObject;
	const preset = (options.dedupeOn as string | undefined) ?? 'all';
	if (preset === 'custom') {
		const raw = String(options.customDedupeFields ?? '');
		const fields = raw
			.split(',')
			.map((f) => f.trim())
			.filter((f) => f.length > 0);
		if (fields.length === 0) {
			throw operationError(
				ctx,
				'Deduplicate On is "Custom Fields" but Custom Dedupe Fields is empty',
				'List the fields, separated by commas, e.g. user, metadata.reference',
			);
		}
		for (const field of fields) {
			if (!isValidDedupePath(field)) {
				throw operationError(
					ctx,
					`"${field}" cannot be a dedupe field`,
					'Use user, amount, metadata or metadata.<key> (for example metadata.reference).',
				);
			}
		}
		return fields;
	}
	const fields = DEDUPE_PRESETS[preset];
	if (!fields) throw operationError(ctx, `Unknown Deduplicate On choice "${preset}"`);
	return [...fields];
}

/** Metadata from the reason and reference fields plus the extra key/value pairs. */
export function buildMetadata(ctx: IExecuteSingleFunctions): IDataObject | undefined {
	const metadata: IDataObject = {};
	const reason = textParameter(ctx, 'reason');
	const reference = textParameter(ctx, 'reference');
	if (reason) metadata.reason = reason;
	if (reference) metadata.reference = reference;
	const extra = (ctx.getNodeParameter('extraMetadata', {}) ?? {}) as { pairs?: MetadataPair[] };
	for (const pair of extra.pairs ?? []) {
		const key = String(pair.key ?? '').trim();
		if (!key) {
			throw operationError(ctx, 'An Extra Metadata entry has no key');
		}
		if (Object.prototype.hasOwnProperty.call(metadata, key)) {
			throw operationError(
				ctx,
				`Metadata key "${key}" is set twice`,
				'Reason and Reference are sent as metadata.reason and metadata.reference; do not repeat them in Extra Metadata.',
			);
		}
		metadata[key] = (pair.value ?? '') as IDataObject[string];
	}
	return Object.keys(metadata).length > 0 ? metadata : undefined;
}

/** The {user, amount, metadata?} body of a deposit or charge for this item. */
export function buildMoneyBody(ctx: IExecuteSingleFunctions, op: IdempotencyOp): IDataObject {
	const user = textParameter(ctx, 'user');
	const amount = textParameter(ctx, 'amount');
	if (!user) throw operationError(ctx, 'User is empty', 'Give the Paywalls user ID, e.g. acme:user_123.');
	if (!amount) throw operationError(ctx, 'Amount is empty', 'Give a positive decimal such as "10" or "2.50".');
	if (op === 'deposit' && !textParameter(ctx, 'reference')) {
		throw operationError(
			ctx,
			'Reference is empty',
			'Map the id of the event that caused this deposit (invoice ID, order ID, ticket ID): it is what makes a repeated run credit only once.',
		);
	}
	const body: IDataObject = { user, amount };
	const metadata = buildMetadata(ctx);
	if (metadata) body.metadata = metadata;
	return body;
}

function moneyPreSend(op: IdempotencyOp) {
	return async function (
		this: IExecuteSingleFunctions,
		requestOptions: IHttpRequestOptions,
	): Promise<IHttpRequestOptions> {
		const body = buildMoneyBody(this, op);
		const fields = dedupeFieldsFor(this);
		const key = deriveIdempotencyKey(op, body, fields);
		requestOptions.body = body;
		requestOptions.headers = {
			...(requestOptions.headers ?? {}),
			'Content-Type': 'application/json',
			'Idempotency-Key': key,
		};
		return requestOptions;
	};
}

/** preSend of Balance -> Deposit Credits. */
export const depositPreSend = moneyPreSend('deposit');

/** preSend of Charge -> Charge User. */
export const chargePreSend = moneyPreSend('charge');

/** preSend of Deposit -> List Deposits: the filters as query parameters. */
export async function listDepositsPreSend(
	this: IExecuteSingleFunctions,
	requestOptions: IHttpRequestOptions,
): Promise<IHttpRequestOptions> {
	const filters = (this.getNodeParameter('filters', {}) ?? {}) as IDataObject;
	const qs: IDataObject = { ...(requestOptions.qs ?? {}) };
	const user = String(filters.user ?? '').trim();
	if (user) qs.user = user;
	const since = filters.since;
	if (since !== undefined && since !== null && String(since).trim() !== '') {
		const date = new Date(String(since));
		if (Number.isNaN(date.getTime())) {
			throw operationError(this, `Since "${String(since)}" is not a date and time`);
		}
		qs.since = date.toISOString();
	}
	const returnAll = this.getNodeParameter('returnAll', false) as boolean;
	const limit = returnAll ? MAX_PAGE_SIZE : Number(this.getNodeParameter('limit', 50));
	qs.limit = Math.max(1, Math.min(MAX_PAGE_SIZE, Math.floor(limit) || 50));
	requestOptions.qs = qs;
	return requestOptions;
}

/** The operation that changes a balance, if this item's is one (deposit or charge). */
function writeOperation(ctx: IExecuteSingleFunctions): 'deposit' | 'charge' | undefined {
	const resource = ctx.getNodeParameter('resource', '') as string;
	const operation = ctx.getNodeParameter('operation', '') as string;
	if (resource === 'balance' && operation === 'deposit') return 'deposit';
	if (resource === 'charge' && operation === 'charge') return 'charge';
	return undefined;
}

/** The credential's Base URL, to name it in a redirect message (undefined if unavailable). */
async function credentialBaseUrl(ctx: IExecuteSingleFunctions): Promise<string | undefined> {
	try {
		const credentials = await ctx.getCredentials('paywallsRelayApi');
		const baseUrl = credentials?.baseUrl;
		return typeof baseUrl === 'string' && baseUrl.trim() ? baseUrl.trim() : undefined;
	} catch {
		return undefined;
	}
}

/** Throw the error, or with Continue On Fail hand it on as an item. */
function failWith(ctx: IExecuteSingleFunctions, info: RelayErrorInfo): INodeExecutionData[] {
	const error = relayErrorToNodeApiError(ctx.getNode(), info, ctx.getItemIndex());
	if (ctx.continueOnFail()) {
		const details: IDataObject = {
			status: info.status,
			problem: info.problem,
			...(info.body as IDataObject),
		};
		if (info.retryAfter) details.retryAfter = info.retryAfter;
		return [{ json: { error: info.message, details } }];
	}
	throw error;
}

/**
 * postReceive of every operation: only a 2xx with the relay's JSON object is a success, and it
 * passes on with the idempotency headers. Any other answer (a problem+json error, a redirect,
 * which is never followed, a proxy's page, a 2xx without a JSON object) becomes a NodeApiError
 * or, with Continue On Fail, an item carrying the error.
 */
export async function handleRelayResponse(
	this: IExecuteSingleFunctions,
	items: INodeExecutionData[],
	response: IN8nHttpFullResponse,
): Promise<INodeExecutionData[]> {
	const status = response.statusCode;
	if (status >= 200 && status < 300) {
		const body = parseBody(response.body);
		if (typeof body !== 'object' || body === null || Array.isArray(body)) {
			return failWith(this, describeUnexpectedBody(status, response.body, writeOperation(this)));
		}
		const json: IDataObject = { ...(body as IDataObject) };
		const key = headerValue(response.headers, 'idempotency-key');
		if (key !== undefined) {
			json.idempotencyKey = key;
			json.idempotentReplayed = headerValue(response.headers, 'idempotent-replayed') === 'true';
		}
		return [{ json }];
	}
	const baseUrl = status >= 300 && status < 400 ? await credentialBaseUrl(this) : undefined;
	return failWith(this, describeRelayError(status, response.body, response.headers, baseUrl));
}

/** Deposit -> List Deposits: follows next_cursor until the limit or the last page. */
export async function paginateDeposits(
	this: IExecutePaginationFunctions,
	requestData: DeclarativeRestApiSettings.ResultOptions,
): Promise<INodeExecutionData[]> {
	const returnAll = this.getNodeParameter('returnAll', false) as boolean;
	const limit = returnAll ? Infinity : Math.max(1, Number(this.getNodeParameter('limit', 50)) || 50);
	const results: INodeExecutionData[] = [];
	let cursor: string | undefined;
	// A relay that kept answering the same cursor would loop forever; stop on a repeat.
	const seen = new Set<string>();
	for (;;) {
		const qs: IDataObject = { ...(requestData.options.qs ?? {}) };
		qs.limit = Math.min(MAX_PAGE_SIZE, limit - results.length);
		if (cursor) qs.cursor = cursor;
		const page = await this.makeRoutingRequest({
			...requestData,
			options: { ...requestData.options, qs },
		});
		const first = page[0]?.json as IDataObject | undefined;
		if (!first || first.error !== undefined) {
			// Continue On Fail turned an error answer into an error item: hand it on as it is.
			return results.length ? [...results, ...page] : page;
		}
		const data = Array.isArray(first.data) ? (first.data as IDataObject[]) : [];
		for (const entry of data) {
			if (results.length >= limit) break;
			results.push({ json: entry });
		}
		const next = typeof first.next_cursor === 'string' && first.next_cursor ? first.next_cursor : undefined;
		// A page may be short, even empty, and still carry a cursor: only its absence ends the list.
		if (!next || results.length >= limit || seen.has(next)) break;
		seen.add(next);
		cursor = next;
	}
	return results;
}

/** postReceive of Deposit Credits and Charge User: say whom and how much the answer is about. */
export async function addUserAndAmount(
	this: IExecuteSingleFunctions,
	items: INodeExecutionData[],
): Promise<INodeExecutionData[]> {
	const user = textParameter(this, 'user');
	const amount = textParameter(this, 'amount');
	return items.map((item) =>
		item.json.error !== undefined ? item : { ...item, json: { user, amount, ...item.json } },
	);
}

/** postReceive of Get Balance: name the user the balance belongs to. */
export async function addUserToBalance(
	this: IExecuteSingleFunctions,
	items: INodeExecutionData[],
): Promise<INodeExecutionData[]> {
	const user = textParameter(this, 'user');
	return items.map((item) =>
		item.json.error !== undefined ? item : { ...item, json: { user, ...item.json } },
	);
}
