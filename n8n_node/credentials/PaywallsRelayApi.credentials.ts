import type {
	IAuthenticateGeneric,
	Icon,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

export class PaywallsRelayApi implements ICredentialType {
	name = 'paywallsRelayApi';

	displayName = 'Paywalls Relay API';

	icon: Icon = {
		light: 'file:../nodes/PaywallsRelay/paywallsRelay.svg',
		dark: 'file:../nodes/PaywallsRelay/paywallsRelay.dark.svg',
	};

	documentationUrl = 'https://www.npmjs.com/package/n8n-nodes-paywalls-relay#credentials';

	properties: INodeProperties[] = [
		{
			displayName: 'Base URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://localhost:8000',
			placeholder: 'https://relay.example.com',
			description:
				'Address of your Paywalls Relay, without a trailing /v1 (the node adds the paths)',
			required: true,
		},
		{
			displayName: 'Relay Token',
			name: 'token',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				'A relay token made with "paywalls-relay tokens create" (never your Paywalls secret key). Its operations and limits decide what this credential may do.',
			required: true,
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				Authorization: '=Bearer {{$credentials.token}}',
			},
		},
	};

	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.baseUrl}}',
			url: '/v1/relay/me',
			method: 'GET',
			// A redirect fails the test instead of testing whatever page it leads to.
			disableFollowRedirect: true,
		},
	};
}
