import type { INodeProperties } from 'n8n-workflow';

type Show = { resource: string[]; operation: string[] };

export function userField(show: Show, description: string): INodeProperties {
	return {
		displayName: 'User',
		name: 'user',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'acme:user_123',
		description,
		displayOptions: { show },
	};
}

export function amountField(show: Show, description: string): INodeProperties {
	return {
		displayName: 'Amount',
		name: 'amount',
		type: 'string',
		required: true,
		default: '',
		placeholder: '10.00',
		description,
		displayOptions: { show },
	};
}

export function extraMetadataField(show: Show): INodeProperties {
	return {
		displayName: 'Extra Metadata',
		name: 'extraMetadata',
		type: 'fixedCollection',
		placeholder: 'Add Metadata',
		default: {},
		typeOptions: { multipleValues: true },
		description:
			'More key/value pairs for reconciliation (plan, campaign, invoice number). No secrets or personal data.',
		displayOptions: { show },
		options: [
			{
				displayName: 'Pair',
				name: 'pairs',
				values: [
					{
						displayName: 'Key',
						name: 'key',
						type: 'string',
						default: '',
						placeholder: 'plan',
					},
					{
						displayName: 'Value',
						name: 'value',
						type: 'string',
						default: '',
						placeholder: 'pro',
					},
				],
			},
		],
	};
}

export function dedupeOptions(show: Show): INodeProperties {
	return {
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show },
		options: [
			{
				displayName: 'Custom Dedupe Fields',
				name: 'customDedupeFields',
				type: 'string',
				default: 'user, metadata.reference',
				description:
					'Used when Deduplicate On is Custom Fields: comma-separated fields among user, amount, metadata and metadata.&lt;key&gt;',
			},
			{
				displayName: 'Deduplicate On',
				name: 'dedupeOn',
				type: 'options',
				default: 'all',
				description: 'Which fields make two calls "the same": the Idempotency-Key is derived from them, so a re-run, a retry or a doubled webhook with the same values changes the balance only once. Default: all fields.',
				options: [
					{
						name: 'All Fields',
						value: 'all',
						description: 'User, amount and all metadata',
					},
					{
						name: 'Custom Fields',
						value: 'custom',
						description: 'The fields listed in Custom Dedupe Fields',
					},
					{
						name: 'User and Reference',
						value: 'reference',
						description:
							'One operation per user and reference; the same reference with another amount is refused',
					},
					{
						name: 'User, Amount and Reference',
						value: 'amountReference',
						description: 'Like User and Reference, but the amount counts too',
					},
				],
			},
		],
	};
}
