import type { INodeProperties } from 'n8n-workflow';
import { addUserAndAmount, chargePreSend, handleRelayResponse } from '../routing';
import { amountField, dedupeOptions, extraMetadataField, userField } from './shared';

const charge = { resource: ['charge'], operation: ['charge'] };

export const chargeOperations: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	displayOptions: { show: { resource: ['charge'] } },
	options: [
		{
			name: 'Charge User',
			value: 'charge',
			action: 'Charge a user',
			description:
				'Take an amount from a user balance. When the balance is too low the output has success false and a message with a top-up link.',
			routing: {
				request: { method: 'POST', url: '/v1/user/charge', ignoreHttpStatusErrors: true },
				send: { preSend: [chargePreSend] },
				output: { postReceive: [handleRelayResponse, addUserAndAmount] },
			},
		},
	],
	default: 'charge',
};

export const chargeFields: INodeProperties[] = [
	userField(charge, 'The Paywalls user ID to charge, e.g. acme:user_123'),
	amountField(charge, 'How much to take, as a positive decimal, e.g. 0.25'),
	{
		displayName: 'Reason',
		name: 'reason',
		type: 'string',
		default: '',
		placeholder: 'report_generated',
		description: 'What the charge is for; sent as metadata.reason',
		displayOptions: { show: charge },
	},
	{
		displayName: 'Reference',
		name: 'reference',
		type: 'string',
		default: '',
		placeholder: 'job_42',
		description:
			'The ID of the job or event being paid for; sent as metadata.reference. Without it, two charges of the same amount to the same user with the same metadata count as one.',
		displayOptions: { show: charge },
	},
	extraMetadataField(charge),
	dedupeOptions(charge),
];
