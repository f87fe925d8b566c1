import type { INodeProperties } from 'n8n-workflow';

// List Deposits' paging and filters: n8n's own conventions (Return All, Limit), not part of
// the client contract.
const list = { resource: ['deposit'], operation: ['getAll'] };

export const listDepositsProperties: INodeProperties[] = [
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
