import {
	NodeApiError,
	NodeConnectionTypes,
	NodeOperationError,
	type ICredentialsDecrypted,
	type ICredentialTestFunctions,
	type IDataObject,
	type IExecuteFunctions,
	type INodeCredentialTestResult,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import { testRelayCredential } from './credentialTest';
import {
	SUBTITLE,
	inputProperties,
	operationProperties,
	resourceProperty,
} from './generated/properties';
import { listDepositsProperties } from './listDeposits';
import {
	balanceCall,
	baseUrlOf,
	errorItem,
	listDeposits,
	moneyCall,
	operationFor,
	readInputs,
	requestFor,
} from './relay';

export class PaywallsRelay implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Paywalls Relay',
		name: 'paywallsRelay',
		icon: { light: 'file:paywallsRelay.svg', dark: 'file:paywallsRelay.dark.svg' },
		group: ['transform'],
		// Version 2: resources named as users look for them, snake_case outputs, the shared
		// contract. Version 1 workflows get a message saying what to change (README).
		version: 2,
		subtitle: SUBTITLE,
		description:
			'Credit, charge and read Paywalls.ai balances through a Paywalls Relay, with a scoped token and automatic idempotency keys',
		defaults: {
			name: 'Paywalls Relay',
		},
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: 'paywallsRelayApi',
				required: true,
				testedBy: 'paywallsRelayApiTest',
			},
		],
		properties: [
			resourceProperty,
			...operationProperties,
			...inputProperties,
			...listDepositsProperties,
		],
	};

	methods = {
		credentialTest: {
			async paywallsRelayApiTest(
				this: ICredentialTestFunctions,
				credential: ICredentialsDecrypted,
			): Promise<INodeCredentialTestResult> {
				return await testRelayCredential(credential.data ?? {}, async ({ url, headers }) => {
					// The credential test context offers only this request helper.
					// eslint-disable-next-line @n8n/community-nodes/no-deprecated-workflow-functions
					return await this.helpers.request({
						method: 'GET',
						uri: url,
						headers,
						json: true,
						followRedirect: false,
						followAllRedirects: false,
						simple: false,
						resolveWithFullResponse: true,
						timeout: 15_000,
					});
				});
			},
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const node = this.getNode();
		const credentials = (await this.getCredentials('paywallsRelayApi')) as IDataObject;
		const baseUrl = baseUrlOf(credentials);
		const out: INodeExecutionData[] = [];
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
			const pairedItem = { item: itemIndex };
			let inputs: Record<string, unknown> = {};
			let key: string | null = null;
			try {
				const resource = this.getNodeParameter('resource', itemIndex) as string;
				const operation = this.getNodeParameter('operation', itemIndex) as string;
				const op = operationFor(node, resource, operation);
				if (op === 'deposits') {
					const entries = await listDeposits(this, itemIndex, baseUrl);
					out.push(...entries.map((json) => ({ json, pairedItem })));
					continue;
				}
				inputs = readInputs(this, itemIndex, op);
				const request = requestFor(node, itemIndex, op, inputs);
				key = request.key;
				const json =
					op === 'balance' || op === 'topup'
						? await balanceCall(this, itemIndex, baseUrl, request)
						: await moneyCall(this, itemIndex, baseUrl, request);
				out.push({ json, pairedItem });
			} catch (error) {
				// Already a NodeApiError / NodeOperationError with the catalogue's message, or wrapped.
				const nodeError =
					error instanceof NodeApiError || error instanceof NodeOperationError
						? error
						: new NodeOperationError(node, error as Error, { itemIndex });
				if (!this.continueOnFail()) throw nodeError;
				// Not item.error: n8n would replace the item's json with {error} and drop user and amount.
				const toErrorOutput = node.onError === 'continueErrorOutput';
				out.push({ json: errorItem(nodeError, inputs, key, toErrorOutput), pairedItem });
			}
		}
		return [out];
	}
}
