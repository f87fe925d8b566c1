/**
 * The one JavaScript implementation of the client contract (schemas/clients/relay-contract.js,
 * copied into generated/ by `npm run generate`), with the types this node uses. Key derivation,
 * request building, step outputs and problem messages all come from there, so the node, the
 * Zapier app and the relay agree on every input.
 */
import * as generated from './generated/relay-contract';

const contract = generated as unknown as RelayContract;

export type Operation = 'deposit' | 'charge' | 'balance' | 'topup' | 'deposits';

export interface ContractErrorShape extends Error {
	code: string;
	params: Record<string, unknown>;
}

export interface BuiltRequest {
	op: Operation;
	method: 'GET' | 'POST';
	path: string;
	body: Record<string, unknown> | null;
	fields: string[] | null;
	key: string | null;
	query: Record<string, string>;
	dryRun: boolean;
	headers: Record<string, string>;
}

export interface ProblemContext {
	tool: 'n8n';
	op?: Operation;
	url?: string;
	status?: number;
	user?: string;
	retry_after?: string;
	origin?: string;
	location?: string;
	suggestion?: string;
	said?: string;
	got?: string;
	cause?: string;
	value?: string;
}

interface RelayContract {
	CONTRACT: { operations: Record<Operation, { inputs: string[] }> } & Record<string, unknown>;
	PROBLEMS: { prefix: string; problems: Record<string, { retry: string; status: unknown; title: string }> };
	PROBLEM_PREFIX: string;
	ContractError: new (code: string, message: string, params?: object) => ContractErrorShape;
	canonicalJson(value: unknown): string;
	canonicalAmount(value: unknown): string;
	deriveKey(op: string, body: unknown, fields?: readonly string[]): string;
	buildRequest(op: Operation, inputs: Record<string, unknown>): BuiltRequest;
	buildOutput(
		op: Operation,
		request: BuiltRequest,
		data: unknown,
		meta: { idempotency_key?: string; replayed?: boolean; sandbox?: boolean },
	): Record<string, unknown>;
	buildReadOutput(
		op: Operation,
		request: { query: Record<string, string> },
		data: unknown,
		meta: { sandbox?: boolean },
	): Record<string, unknown> | Record<string, unknown>[];
	problemName(body: unknown): string | null;
	problemRetry(problem: unknown): string;
	renderProblem(problem: unknown, context: ProblemContext): string;
}

export const {
	CONTRACT,
	PROBLEMS,
	PROBLEM_PREFIX,
	ContractError,
	deriveKey,
	buildRequest,
	buildOutput,
	buildReadOutput,
	problemName,
	problemRetry,
	renderProblem,
} = contract;

export function isContractError(error: unknown): error is ContractErrorShape {
	return error instanceof ContractError;
}
