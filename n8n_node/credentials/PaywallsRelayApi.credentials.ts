import type { IAuthenticateGeneric, Icon, ICredentialType, INodeProperties } from 'n8n-workflow';

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
			default: 'http://host.docker.internal:8000',
			placeholder: 'https://relay.example.com',
			description:
				'Address of your Paywalls Relay exactly as the relay operator gave it, without /v1 (the node adds the paths), e.g. https://relay.example.com. The default reaches a relay started with "make run" on the machine where n8n runs in Docker (inside the container, localhost is n8n itself; on Linux start the container with --add-host=host.docker.internal:host-gateway). n8n started with npm on the same machine as the relay: http://localhost:8000.',
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

	// The credential test is the node's paywallsRelayApiTest (PaywallsRelay.node.ts): it gives
	// the same message for each failure as the node at run time, which a declarative test cannot.
}
