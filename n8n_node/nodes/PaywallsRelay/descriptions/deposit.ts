import type { INodeProperties } from 'n8n-workflow';
import { handleRelayResponse, listDepositsPreSend, paginateDeposits } from '../routing';

const list = { resource: ['deposit'], operation: ['list'] };

export const depositOperations: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	displayOptions: { show: { resource: ['deposit'] } },
	options: [
		{
			name: 'List Deposits',
			value: 'list',
			action: 'List deposits made through the relay',
			description: 'Credits the relay applied, newest first',
			routing: {
				request: { method: 'GET', url: '/v1/relay/deposits', ignoreHttpStatusErrors: true },
				send: { preSend: [listDepositsPreSend], paginate: true },
				operations: { pagination: paginateDeposits },
				output: { postReceive: [handleRelayResponse] },
			},
		},
	],
	default: 'list',
};

export const depositFields: INodeProperties[] = [
	{
		displayName: 'Return All',
		name: 'returnAll',
		type: 'boolean',
		default: false,
		description: 'Whether to return all results or only up to a given limit',
		displayOptions: { show: list },
	},
	{
		displayName: 'Limit',
		name: 'limit',
		type: 'number',
		typeOptions: { minValue: 1 },
		default: 50,
		description: 'Max number of results to return',
		displayOptions: { show: { ...list, returnAll: [false] } },
	},
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		default: {},
		displayOptions: { show: list },
		options: [
			{
				displayName: 'User',
				name: 'user',
				type: 'string',
				default: '',
				placeholder: 'acme:user_123',
				description: 'Only deposits to this user',
			},
			{
				displayName: 'Since',
				name: 'since',
				type: 'dateTime',
				default: '',
				description: 'Only deposits made at or after this time',
			},
		],
	},
];
