import { NodeConnectionTypes, type INodeType, type INodeTypeDescription } from 'n8n-workflow';
import { balanceFields, balanceOperations } from './descriptions/balance';
import { chargeFields, chargeOperations } from './descriptions/charge';
import { depositFields, depositOperations } from './descriptions/deposit';

export class PaywallsRelay implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Paywalls Relay',
		name: 'paywallsRelay',
		icon: { light: 'file:paywallsRelay.svg', dark: 'file:paywallsRelay.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"] + ": " + $parameter["resource"]}}',
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
			},
		],
		requestDefaults: {
			baseURL: '={{$credentials.baseUrl}}',
			headers: {
				Accept: 'application/json',
			},
			// No ignoreHttpStatusErrors here: n8n's credential test reuses requestDefaults, and a
			// 401 must fail it. Each operation sets it so handleRelayResponse reads problem+json.
			// Never follow a redirect (http:// to https://, a login page, a load balancer): a
			// followed 301/302 turns the POST into a GET and a followed 307/308 re-sends the body
			// and token elsewhere, either possibly ending in a 2xx that is not the relay's answer.
			// The 3xx reaches handleRelayResponse, which fails with a message naming it.
			disableFollowRedirect: true,
		},
		properties: [
			{
				displayName: 'Resource',
				name: 'resource',
				type: 'options',
				noDataExpression: true,
				options: [
					{ name: 'Balance', value: 'balance' },
					{ name: 'Charge', value: 'charge' },
					{ name: 'Deposit', value: 'deposit' },
				],
				default: 'balance',
			},
			balanceOperations,
			chargeOperations,
			depositOperations,
			...balanceFields,
			...chargeFields,
			...depositFields,
		],
	};
}
