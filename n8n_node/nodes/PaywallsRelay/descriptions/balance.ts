import type { INodeProperties } from 'n8n-workflow';
import { addUserAndAmount, addUserToBalance, depositPreSend, handleRelayResponse } from '../routing';
import { amountField, dedupeOptions, extraMetadataField, userField } from './shared';

const deposit = { resource: ['balance'], operation: ['deposit'] };
const get = { resource: ['balance'], operation: ['get'] };

export const balanceOperations: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	displayOptions: { show: { resource: ['balance'] } },
	options: [
		{
			name: 'Deposit Credits',
			value: 'deposit',
			action: 'Deposit credits to a user',
			description: "Add credits to a user's balance, once per reference",
			routing: {
				request: { method: 'POST', url: '/v1/user/balance/deposit', ignoreHttpStatusErrors: true },
				send: { preSend: [depositPreSend] },
				output: { postReceive: [handleRelayResponse, addUserAndAmount] },
			},
		},
		{
			name: 'Get Balance',
			value: 'get',
			action: 'Get a user balance',
			description: "Read a user's current balance",
			routing: {
				request: { method: 'GET', url: '/v1/user/balance', ignoreHttpStatusErrors: true },
				output: { postReceive: [handleRelayResponse, addUserToBalance] },
			},
		},
	],
	default: 'deposit',
};

export const balanceFields: INodeProperties[] = [
	userField(deposit, 'The Paywalls user ID to credit, e.g. acme:user_123 (never an email address)'),
	amountField(
		deposit,
		'How much to add, as a positive decimal in the paywall currency, e.g. 10 or 2.50',
	),
	{
		displayName: 'Reason',
		name: 'reason',
		type: 'string',
		default: '',
		placeholder: 'subscription_renewal',
		description: 'Why the credits are granted; sent as metadata.reason',
		displayOptions: { show: deposit },
	},
	{
		displayName: 'Reference',
		name: 'reference',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'in_1Q2w3E4r',
		description:
			'The ID of the event that caused this deposit (invoice, order, ticket). Sent as metadata.reference; it is what keeps a repeated run from crediting twice.',
		displayOptions: { show: deposit },
	},
	extraMetadataField(deposit),
	dedupeOptions(deposit),
	{
		...userField(get, 'The Paywalls user ID whose balance to read'),
		routing: { send: { type: 'query', property: 'user' } },
	},
];
