import {
	NodeConnectionTypes,
	NodeOperationError,
	type IDataObject,
	type IHookFunctions,
	type INodeType,
	type INodeTypeDescription,
	type IWebhookFunctions,
	type IWebhookResponseData,
} from 'n8n-workflow';
import {
	TRIGGER_OF,
	TRIGGER_SUBTITLE,
	eventProperty,
	userProperty,
} from '../PaywallsRelay/generated/trigger-properties';
import { PaywallsRelay } from '../PaywallsRelay/PaywallsRelay.node';
import { createHook, deleteHook, events, listHooks, type RelayCaller } from './hooks';

/** The contract's trigger name for the node's Event parameter. */
function triggerName(ctx: IHookFunctions | IWebhookFunctions): string {
	const value = ctx.getNodeParameter('event') as string;
	const name = TRIGGER_OF[value];
	if (!name) {
		throw new NodeOperationError(ctx.getNode(), `Unknown event "${value}"`, {
			description: `Pick one of: ${Object.keys(TRIGGER_OF).join(', ')}.`,
		});
	}
	return name;
}

function userFilter(ctx: IHookFunctions | IWebhookFunctions): string {
	try {
		return events.filterUser(ctx.getNodeParameter('user', ''));
	} catch (error) {
		throw new NodeOperationError(ctx.getNode(), (error as Error).message, {
			description: 'Enter one Paywalls user id, or leave User empty for every user the token covers.',
		});
	}
}

const caller = (ctx: IHookFunctions) => ctx as unknown as RelayCaller;

export class PaywallsRelayTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Paywalls Relay Trigger',
		name: 'paywallsRelayTrigger',
		icon: { light: 'file:../PaywallsRelay/paywallsRelay.svg', dark: 'file:../PaywallsRelay/paywallsRelay.dark.svg' },
		group: ['trigger'],
		version: 1,
		subtitle: TRIGGER_SUBTITLE,
		description:
			'Starts the workflow at once when a deposit is created, a balance is depleted or a charge fails, through your Paywalls Relay',
		defaults: {
			name: 'Paywalls Relay Trigger',
		},
		inputs: [],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: 'paywallsRelayApi',
				required: true,
				testedBy: 'paywallsRelayApiTest',
			},
		],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				responseMode: 'onReceived',
				path: 'webhook',
			},
		],
		properties: [
			{
				displayName:
					'Needs a relay token with the "events" operation. The relay must be able to reach this n8n\'s webhook URL.',
				name: 'notice',
				type: 'notice',
				default: '',
			},
			eventProperty,
			userProperty,
		],
	};

	methods = {
		credentialTest: {
			// The same test as the action node's: GET /v1/relay/me, with the catalogue's messages.
			paywallsRelayApiTest: new PaywallsRelay().methods.credentialTest.paywallsRelayApiTest,
		},
	};

	// The relay keeps the subscription (a REST hook) and POSTs each matching event to this node's
	// webhook URL; the hook's id is kept in the node's static data between activations.
	webhookMethods = {
		default: {
			async checkExists(this: IHookFunctions): Promise<boolean> {
				const url = this.getNodeWebhookUrl('default') as string;
				const name = triggerName(this);
				const user = userFilter(this);
				const data = this.getWorkflowStaticData('node');
				let found = false;
				// Any other hook aiming at this webhook URL is left over from earlier settings (another
				// Event or User): delete it, so the workflow never runs for events it no longer asks for.
				for (const hook of await listHooks(caller(this), url)) {
					if (hook.target_url !== url) continue;
					if (!found && events.sameHook(hook, name, url, user)) {
						found = true;
						data.hookId = hook.id;
						continue;
					}
					await deleteHook(caller(this), hook.id);
				}
				if (!found) delete data.hookId;
				return found;
			},

			async create(this: IHookFunctions): Promise<boolean> {
				const url = this.getNodeWebhookUrl('default') as string;
				const data = this.getWorkflowStaticData('node');
				data.hookId = await createHook(caller(this), triggerName(this), url, userFilter(this));
				return true;
			},

			async delete(this: IHookFunctions): Promise<boolean> {
				const data = this.getWorkflowStaticData('node');
				const id = typeof data.hookId === 'string' ? data.hookId : null;
				if (id !== null) {
					try {
						await deleteHook(caller(this), id);
					} catch (error) {
						this.logger.warn(`Paywalls Relay Trigger: could not delete hook ${id}: ${(error as Error).message}`);
						// n8n deactivates the workflow anyway. The hook stays on the relay, whose deliveries to this
						// no longer registered URL then fail until it gives up (24 h); `GET /v1/relay/hooks` shows it.
						return false;
					}
				}
				delete data.hookId;
				return true;
			},
		},
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		const event = events.eventOf(this.getBodyData());
		// A POST that is not an event, or not one this trigger asked for, starts nothing.
		if (event === null || !events.matches(triggerName(this), event, userFilter(this))) {
			return { webhookResponse: { received: true, started: false } };
		}
		return {
			workflowData: [this.helpers.returnJsonArray([events.triggerItem(event) as IDataObject])],
		};
	}
}
